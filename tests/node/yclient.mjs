// The stock JavaScript Yjs client (yjs + y-websocket's WebsocketProvider), driven line by line.
//
//   node yclient.mjs <serverUrl> <roomname> <token> [clientID]
//
// e.g. `node yclient.mjs ws://127.0.0.1:8000/yjs contacts/42 cs_...`: the provider connects to
// serverUrl + '/' + roomname + '?token=...', exactly as it would in a browser.
//
// stdin: one JSON command per line
//   {"op": "edit", "edits": [...]}     apply the edits in one Yjs transaction, where an edit is
//       {"set": field, "value": v}        record[field] = v (a plain value)
//       {"set": field, "text": s}         record[field] = new Y.Text(s)
//       {"delete": field}                 record.delete(field)
//       {"insert": field, "index": i, "text": s}   record[field].insert(i, s) (a Y.Text)
//   {"op": "transactions", "transactions": [[...], ...]}   each list of edits in a transaction
//       of its own, all in one go: the provider sends them back to back
//   {"op": "awareness", "state": {...}}   awareness.setLocalState(state)
//   {"op": "close"}                       provider.destroy(), then exit
//
// stdout: one JSON event per line
//   {"event": "status", "status": "connecting" | "connected" | "disconnected"}
//   {"event": "synced", "synced": true | false}
//   {"event": "record", "record": {...}}                  after every change of the document
//   {"event": "denied", "reason": "..."}                  y-protocols auth permission-denied
//   {"event": "awareness", "clientID": n, "states": {...}} after every awareness change
//   {"event": "awareness-frame", "clients": [{"clientID", "clock", "state"}]} as received
//   {"event": "connection-close", "code": n, "reason": "..."}
//   {"event": "connection-error", "message": "..."}
//   {"event": "applied", "id": ...}                        a command was carried out
//   {"event": "error", "message": "..."}                   a command failed
//
// The provider is used unchanged. Its permission-denied handler is a module-private function
// that reports through console.warn("Permission denied to access <url>.\n<reason>"): that is
// the one hook a stock application has, so it is captured here and turned into an event.

import { createInterface } from 'node:readline'
import WebSocket from 'ws'
import * as Y from 'yjs'
import * as decoding from 'lib0/decoding'
import { WebsocketProvider, messageAwareness } from 'y-websocket'

const [serverUrl, roomname, token, clientID] = process.argv.slice(2)
if (!serverUrl || !roomname) {
  process.stderr.write('usage: node yclient.mjs <serverUrl> <roomname> [token]\n')
  process.exit(2)
}

const emit = (event) => process.stdout.write(JSON.stringify(event) + '\n')

const DENIED = /^Permission denied to access (.*?)\.\n([\s\S]*)$/
const warn = console.warn.bind(console)
console.warn = (...args) => {
  const match = args.length === 1 && typeof args[0] === 'string' ? DENIED.exec(args[0]) : null
  if (match) {
    emit({ event: 'denied', reason: match[2] })
  } else {
    warn(...args)
  }
}

const doc = new Y.Doc()
if (clientID) doc.clientID = Number(clientID) // as a test needs it: above or below the server's
const record = doc.getMap('record')
const provider = new WebsocketProvider(serverUrl, roomname, doc, {
  params: token ? { token } : {},
  WebSocketPolyfill: WebSocket,
  // Separate processes share no BroadcastChannel anyway; keep every byte on the websocket.
  disableBc: true
})

// Every awareness frame as it arrives, before the stock handler applies it: Awareness hides a
// relay of our own state (same clock, nothing changes), the frame shows the server sent it.
const handleAwareness = provider.messageHandlers[messageAwareness]
provider.messageHandlers[messageAwareness] = (encoder, decoder, ...rest) => {
  const peek = decoding.clone(decoder)
  const update = decoding.createDecoder(decoding.readVarUint8Array(peek))
  const clients = []
  for (let n = decoding.readVarUint(update); n > 0; n--) {
    const clientID = decoding.readVarUint(update)
    const clock = decoding.readVarUint(update)
    clients.push({ clientID, clock, state: JSON.parse(decoding.readVarString(update)) })
  }
  emit({ event: 'awareness-frame', clients })
  handleAwareness(encoder, decoder, ...rest)
}

provider.on('status', ({ status }) => emit({ event: 'status', status }))
provider.on('sync', (synced) => emit({ event: 'synced', synced }))
provider.on('connection-close', (event) => emit({
  event: 'connection-close', code: event?.code ?? null, reason: event?.reason?.toString() ?? ''
}))
provider.on('connection-error', (event) =>
  emit({ event: 'connection-error', message: String(event?.message ?? event?.error ?? event) })
)
doc.on('update', () => emit({ event: 'record', record: record.toJSON() }))
provider.awareness.on('change', () =>
  emit({
    event: 'awareness',
    clientID: doc.clientID,
    states: Object.fromEntries(provider.awareness.getStates())
  })
)

const applyEdit = (edit) => {
  if ('set' in edit) {
    record.set(edit.set, 'text' in edit ? new Y.Text(edit.text) : edit.value)
  } else if ('delete' in edit) {
    record.delete(edit.delete)
  } else if ('insert' in edit) {
    const text = record.get(edit.insert)
    if (!(text instanceof Y.Text)) throw new Error(`${edit.insert} is not a Y.Text`)
    text.insert(edit.index, edit.text)
  } else {
    throw new Error(`unknown edit ${JSON.stringify(edit)}`)
  }
}

const shutdown = (code) => {
  provider.destroy()
  doc.destroy()
  process.exit(code)
}

const lines = createInterface({ input: process.stdin })
lines.on('line', (line) => {
  if (!line.trim()) return
  let command
  try {
    command = JSON.parse(line)
    if (command.op === 'edit') {
      doc.transact(() => command.edits.forEach(applyEdit))
    } else if (command.op === 'transactions') {
      command.transactions.forEach((edits) => doc.transact(() => edits.forEach(applyEdit)))
    } else if (command.op === 'awareness') {
      provider.awareness.setLocalState(command.state)
    } else if (command.op === 'close') {
      shutdown(0)
    } else {
      throw new Error(`unknown op ${JSON.stringify(command.op)}`)
    }
    emit({ event: 'applied', id: command.id ?? null })
  } catch (error) {
    emit({ event: 'error', id: command?.id ?? null, message: String(error?.stack ?? error) })
  }
})
// The driver went away: leave too, rather than linger reconnecting.
lines.on('close', () => shutdown(0))
