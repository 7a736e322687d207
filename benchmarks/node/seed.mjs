// Seeds a peer's store with the records live_bench.py made, in that peer's own format.
//   node seed.mjs hocuspocus|ywss STORE RECORDS_FILE
// RECORDS_FILE: per record, a u32 (big-endian) name length, the name (UTF-8), a u32 update
// length and the record's Yjs update, so every server starts from the same bytes.
import { readFileSync } from 'node:fs'

const [kind, store, file] = process.argv.slice(2)
const data = readFileSync(file)
const records = []
for (let pos = 0; pos < data.length;) {
  const nameLength = data.readUInt32BE(pos); pos += 4
  const name = data.subarray(pos, pos + nameLength).toString('utf8'); pos += nameLength
  const updateLength = data.readUInt32BE(pos); pos += 4
  records.push([name, new Uint8Array(data.subarray(pos, pos + updateLength))]); pos += updateLength
}

if (kind === 'hocuspocus') {
  // the extension's own schema and upsert, one transaction
  const { schema, upsertQuery } = await import('@hocuspocus/extension-sqlite')
  const { default: Database } = await import('better-sqlite3')
  const db = new Database(store)
  db.exec(schema)
  const upsert = db.prepare(upsertQuery)
  db.transaction(() => { for (const [name, update] of records) upsert.run({ name, data: update }) })()
  db.close()
} else if (kind === 'ywss') {
  // what @y/websocket-server's persistence stores for a new document: its updates in y-leveldb
  const { LeveldbPersistence } = await import('y-leveldb')
  const ldb = new LeveldbPersistence(store)
  for (const [name, update] of records) await ldb.storeUpdate(name, update)
  await ldb.destroy()
} else {
  throw new Error(`unknown peer ${kind}`)
}
console.error(`seeded ${records.length} records into ${kind} ${store}`)
