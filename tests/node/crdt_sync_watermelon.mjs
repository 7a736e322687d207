// How a WatermelonDB app wires synchronize() to crdt-sync: only fetch calls.
// docs/REST.md shows this function verbatim; tests/test_watermelondb.py checks that it does.
import { synchronize } from '@nozbe/watermelondb/sync/index.js'

// --- docs/REST.md: begin
export async function syncWithCrdtSync({ database, baseUrl, token, clientId, pageSize = 10000 }) {
  const headers = { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' }
  if (clientId) headers['X-Client-Id'] = clientId // several devices on one token
  const call = async (path, init = {}) => {
    const response = await fetch(baseUrl + path, { ...init, headers })
    const body = await response.json()
    if (!response.ok) throw new Error(`${path}: ${response.status} ${body.error.message}`)
    return body
  }
  let more = true
  while (more) {
    more = false
    await synchronize({
      database,
      pullChanges: async ({ lastPulledAt }) => {
        if (lastPulledAt) {
          const pulled = await call(`/api/sync/incremental?since=${lastPulledAt}&limit=${pageSize}`)
          more = pulled.next !== null // more changes than one answer holds: sync again
          return pulled
        }
        // First sync: every page of the initial view, all under the first page's timestamp.
        let page = await call(`/api/sync/initial?limit=${pageSize}`)
        const { changes, timestamp } = page
        while (page.next !== null) {
          page = await call(`/api/sync/initial?limit=${pageSize}&page=${page.next}`)
          for (const [table, { created }] of Object.entries(page.changes)) {
            changes[table].created.push(...created)
          }
        }
        return { changes, timestamp }
      },
      // The rows as synchronize() hands them over, _status and _changed included.
      pushChanges: async ({ changes, lastPulledAt }) =>
        call('/api/sync/outgoing', { method: 'POST', body: JSON.stringify({ changes, lastPulledAt }) }),
      // crdt-sync tells new records (`created`) from the device's own (`updated`).
      sendCreatedAsUpdated: false,
    })
  }
}
// --- docs/REST.md: end
