// Join one record live from Node 20 with the stock Yjs client, print it, change a field.
//   npm install yjs@13 y-websocket@3 ws@8
//   TOKEN=<a device token> node join-record.mjs contacts/ada
import * as Y from 'yjs'
import { WebsocketProvider } from 'y-websocket'
import WebSocket from 'ws' // Node 20 has no WebSocket of its own that y-websocket can use

const docId = process.argv[2] ?? 'contacts/ada'
const server = process.env.CRDT_SYNC_URL ?? 'ws://127.0.0.1:8765'
const doc = new Y.Doc()
const provider = new WebsocketProvider(`${server}/yjs`, docId, doc, {
  params: { token: process.env.TOKEN },
  WebSocketPolyfill: WebSocket,
})
provider.on('connection-close', (event) => {
  if (event && event.code >= 4000) { // refused: 4401 a bad token (docs/PROTOCOL.md lists them)
    console.error(`closed by the server: ${event.code} ${event.reason}`)
    process.exit(1)
  }
})
provider.once('sync', () => {
  const record = doc.getMap('record') // a record's fields; notes are Y.Text
  console.log(JSON.stringify(record.toJSON()))
  record.set('company', 'Analytical Engines Ltd') // sent at once; every peer sees it live
  const sent = setInterval(() => {
    if (provider.ws && provider.ws.bufferedAmount === 0) { // written out: safe to leave
      clearInterval(sent)
      provider.destroy()
      doc.destroy() // and its awareness timer, so node exits
    }
  }, 10)
})
