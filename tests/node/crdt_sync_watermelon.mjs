// How a WatermelonDB app wires synchronize() to crdt-sync: only fetch calls.
// docs/REST.md shows this function verbatim; tests/test_watermelondb.py checks that it does.
import { synchronize } from '@nozbe/watermelondb/sync/index.js'

// --- docs/REST.md: begin
export async function syncWithCrdtSync({
  database, baseUrl, token, clientId, pageSize = 10000, sendCreatedAsUpdated = false,
}) {
  const headers = { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' }
  if (clientId) headers['X-Client-Id'] = clientId // several devices on one token
  const call = async (path, init = {}) => {
    const response = await fetch(baseUrl + path, { ...init, headers })
    const body = await response.json()
    if (!response.ok) throw new Error(`${path}: ${response.status} ${body.error.message}`)
    return body
  }
  // By default crdt-sync tells records new to the device (`created`) from the ones it has
  // (`updated`); apps that make ids from data ask for everything as `updated`.
  const query = `limit=${pageSize}&created_as_updated=${sendCreatedAsUpdated}`
  const gone = [] // records deleted on the server for good: it dropped our writes to them
  let more = true
  while (more) {
    more = false
    await synchronize({
      database,
      pullChanges: async ({ lastPulledAt }) => {
        if (lastPulledAt) {
          const pulled = await call(`/api/sync/incremental?since=${lastPulledAt}&${query}`)
          more = pulled.next !== null // more changes than one answer holds: sync again
          return pulled
        }
        // First sync: every page of the initial view, all under the first page's timestamp.
        let page = await call(`/api/sync/initial?${query}`)
        const { changes, timestamp } = page
        while (page.next !== null) {
          page = await call(`/api/sync/initial?${query}&page=${page.next}`)
          for (const [table, { created, updated }] of Object.entries(page.changes)) {
            changes[table].created.push(...created)
            changes[table].updated.push(...updated)
          }
        }
        return { changes, timestamp }
      },
      // The rows as synchronize() hands them over, _status and _changed included.
      pushChanges: async ({ changes, lastPulledAt }) => {
        const body = JSON.stringify({ changes, lastPulledAt })
        const pushed = await call('/api/sync/outgoing', { method: 'POST', body })
        gone.push(...pushed.applied.filter(({ action }) => action === 'ignored'))
        return pushed
      },
      sendCreatedAsUpdated,
    })
  }
  // Deletes are final: a record created again under a deleted id goes away here too.
  await database.write(async () => {
    for (const { collection, id } of gone) {
      const record = await database.get(collection).find(id).catch(() => null)
      await record?.destroyPermanently()
    }
  })
}
// --- docs/REST.md: end
