// Hocuspocus 4.7 with @hocuspocus/extension-sqlite, as its docs set it up: the extension's own
// debounce (2 s, at most 10 s) decides when a document's state reaches SQLite.
//   node hocuspocus_server.mjs PORT DB_FILE
import { Server } from '@hocuspocus/server'
import { SQLite } from '@hocuspocus/extension-sqlite'

const [port, database] = process.argv.slice(2)
const server = new Server({
  port: Number(port),
  address: '127.0.0.1',
  quiet: true,
  stopOnSignals: true,
  extensions: [new SQLite({ database })]
})
await server.listen()
console.error(`hocuspocus serving ${database} on ${port}`)
