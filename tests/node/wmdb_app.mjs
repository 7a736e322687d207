// A WatermelonDB app under Node, driven line by line: the real @nozbe/watermelondb (Database,
// Model, LokiJSAdapter (in memory under Node), synchronize()) syncing with crdt-sync through
// crdt_sync_watermelon.mjs, the code docs/REST.md shows.
//
//   node wmdb_app.mjs <baseUrl> <token> <clientId> [options]
//
// options: JSON, passed on to syncWithCrdtSync: {"pageSize": n, "sendCreatedAsUpdated": bool}
//
// stdin: one JSON command per line, each with an "id"; they run one at a time, in order
//   {"op": "create", "table": t, "fields": {...}, "recordId"?: id}   db.write(collection.create)
//   {"op": "update", "table": t, "recordId": id, "fields": {...}}     db.write(record.update)
//   {"op": "delete", "table": t, "recordId": id}                     db.write(record.markAsDeleted)
//   {"op": "sync", "holdPush"?: true, "server"?: url, "serverToken"?: t}   syncWithCrdtSync(...); with
//       holdPush, its push waits for {"op": "release"} (which runs at once, not queued)
//   {"op": "rows", "table": t}       raw rows (_status and _changed included) and locally deleted ids
//   {"op": "schema"}                 the app's tables and columns
//
// stdout: one JSON event per line
//   {"event": "result", "id": n, "result": ...}      a command was carried out
//   {"event": "error", "id": n, "message": "..."}    a command threw
//   {"event": "console", "level": "error" | "warn" | "log" | ..., "message": "..."}
//       everything WatermelonDB (and LokiJS) print: its logger writes to console
//   {"event": "http", "method": m, "path": p, "status": n, "request": {...}, "body": {...}}
//       every request the sync function made, with its JSON body and the answer's
//   {"event": "holding", "path": p, "request": {...}}   a push waits for "release"
//
// Fields are written the way @field setters write them (Model._setRaw), so WatermelonDB keeps
// its own _status/_changed bookkeeping; models need no decorators (and so no Babel).

import { createRequire } from 'node:module'
import { createInterface } from 'node:readline'
import { format } from 'node:util'
import { syncWithCrdtSync } from './crdt_sync_watermelon.mjs'

const require = createRequire(import.meta.url)
const { Database, Model, appSchema, tableSchema } = require('@nozbe/watermelondb')
const LokiJSAdapter = require('@nozbe/watermelondb/adapters/lokijs').default
const { hasUnsyncedChanges } = require('@nozbe/watermelondb/sync')

const [baseUrl, token, clientId, options = '{}'] = process.argv.slice(2)
const syncOptions = JSON.parse(options)
if (!baseUrl || !token || !clientId) {
  process.stderr.write('usage: node wmdb_app.mjs <baseUrl> <token> <clientId> [options]\n')
  process.exit(2)
}

const emit = (event) => process.stdout.write(JSON.stringify(event) + '\n')

for (const level of ['debug', 'log', 'info', 'warn', 'error']) {
  console[level] = (...args) => emit({ event: 'console', level, message: format(...args) })
}

// The CRM schema (crdt_sync/schema.py DEFAULT_SCHEMA) as a WatermelonDB app declares it. Every
// column but the required title is optional, so unset stays null as on the server. Datetimes
// travel as ISO 8601 strings (the server's stored form), so `due_at` is a string column.
const optional = (name, type = 'string', extra = {}) => ({ name, type, isOptional: true, ...extra })
const schema = appSchema({
  version: 1,
  tables: [
    tableSchema({
      name: 'contacts',
      columns: [{ name: 'name', type: 'string' }, optional('email'), optional('phone'),
        optional('company'), optional('notes')],
    }),
    tableSchema({
      name: 'deals',
      columns: [{ name: 'title', type: 'string' }, optional('amount', 'number'),
        optional('currency'), optional('stage'), optional('contact_id', 'string', { isIndexed: true }),
        optional('close_date'), optional('notes')],
    }),
    tableSchema({
      name: 'tasks',
      columns: [{ name: 'title', type: 'string' }, optional('done', 'boolean'), optional('due_at'),
        optional('contact_id', 'string', { isIndexed: true }),
        optional('deal_id', 'string', { isIndexed: true }), optional('notes')],
    }),
  ],
})

// Plain getters over the raw columns, as @field would define them.
function withFields(ModelClass) {
  for (const { name } of schema.tables[ModelClass.table].columnArray) {
    Object.defineProperty(ModelClass.prototype, name, {
      get() { return this._getRaw(name) },
      set(value) { this._setRaw(name, value) },
    })
  }
  return ModelClass
}

class Contact extends Model {
  static table = 'contacts'
  static associations = {
    deals: { type: 'has_many', foreignKey: 'contact_id' },
    tasks: { type: 'has_many', foreignKey: 'contact_id' },
  }
}

class Deal extends Model {
  static table = 'deals'
  static associations = {
    contacts: { type: 'belongs_to', key: 'contact_id' },
    tasks: { type: 'has_many', foreignKey: 'deal_id' },
  }
}

class Task extends Model {
  static table = 'tasks'
  static associations = {
    contacts: { type: 'belongs_to', key: 'contact_id' },
    deals: { type: 'belongs_to', key: 'deal_id' },
  }
}

const adapter = new LokiJSAdapter({
  schema,
  dbName: `app-${clientId}`,
  useWebWorker: false,
  // The recommended setting; Node has no IndexedDB, so LokiJS keeps the database in memory.
  useIncrementalIndexedDB: true,
  onSetUpError: (error) => emit({ event: 'console', level: 'error', message: `setup: ${error}` }),
})
const database = new Database({ adapter, modelClasses: [Contact, Deal, Task].map(withFields) })

// Test instrumentation, not app code: see every request the sync function makes, and hold a
// push (after the pull of the same synchronize()) until told to go on, so a test can change
// the server in between.
let holdPushes = false
let releasePush = null
const realFetch = globalThis.fetch
globalThis.fetch = async (url, init = {}) => {
  const { pathname, search } = new URL(url)
  const request = init.body ? JSON.parse(init.body) : null
  if (holdPushes && pathname === '/api/sync/outgoing') {
    await new Promise((resolve) => {
      releasePush = resolve
      emit({ event: 'holding', path: pathname, request })
    })
  }
  const response = await realFetch(url, init)
  const body = await response.clone().json().catch(() => null)
  emit({ event: 'http', method: init.method || 'GET', path: pathname + search, status: response.status, request, body })
  return response
}

const assign = (record, fields) => {
  for (const [name, value] of Object.entries(fields)) {
    if (!(name in record)) throw new Error(`${record.table} has no column ${name}`)
    record[name] = value
  }
}

const commands = {
  async create({ table, fields, recordId }) {
    const record = await database.write(() => database.get(table).create((row) => {
      if (recordId) row._raw.id = recordId
      assign(row, fields)
    }))
    return record.id
  },
  async update({ table, recordId, fields }) {
    const record = await database.get(table).find(recordId)
    await database.write(() => record.update((row) => assign(row, fields)))
    return record._raw
  },
  async delete({ table, recordId }) {
    const record = await database.get(table).find(recordId)
    await database.write(() => record.markAsDeleted())
    return null
  },
  async sync({ holdPush = false, server = baseUrl, serverToken = token }) {
    holdPushes = holdPush
    try {
      await syncWithCrdtSync({ database, baseUrl: server, token: serverToken, clientId, ...syncOptions })
    } finally {
      holdPushes = false
    }
    return { unsynced: await hasUnsyncedChanges({ database }) }
  },
  async rows({ table }) {
    const records = await database.get(table).query().fetch()
    return {
      rows: records.map((record) => ({ ...record._raw })),
      deleted: await database.adapter.getDeletedRecords(table),
    }
  },
  async schema() {
    return Object.fromEntries(Object.values(schema.tables).map(({ name, columnArray }) =>
      [name, columnArray.map((column) => column.name)]))
  },
}

let queue = Promise.resolve()
const lines = createInterface({ input: process.stdin })
lines.on('line', (line) => {
  const command = JSON.parse(line)
  if (command.op === 'release') { // not queued: the held sync is the command running now
    releasePush?.()
    releasePush = null
    emit({ event: 'result', id: command.id, result: null })
    return
  }
  queue = queue.then(async () => {
    try {
      emit({ event: 'result', id: command.id, result: await commands[command.op](command) })
    } catch (error) {
      emit({ event: 'error', id: command.id, message: String(error?.stack || error) })
    }
  })
})
// LokiJS autosaves on a timer: leave once the commands are done, not when the timers are.
lines.on('close', () => queue.then(() => process.exit(0)))
