// The peer for the WebSocket benchmarks: Node's `ws` server with the same
// two endpoints elementd's bench elements have. /echo sends each message
// back; /fan sends each message to every other client.
const { WebSocketServer, WebSocket } = require('ws');
const http = require('http');

const server = http.createServer();
const echo = new WebSocketServer({ noServer: true, perMessageDeflate: false });
const fan = new WebSocketServer({ noServer: true, perMessageDeflate: false });

echo.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});
fan.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => {
    for (const c of fan.clients) {
      if (c !== ws && c.readyState === WebSocket.OPEN) c.send(data, { binary: isBinary });
    }
  });
});
server.on('upgrade', (req, socket, head) => {
  const wss = req.url.startsWith('/echo') ? echo : req.url.startsWith('/fan') ? fan : null;
  if (!wss) return socket.destroy();
  wss.handleUpgrade(req, socket, head, (ws) => wss.emit('connection', ws, req));
});
server.listen(0, '127.0.0.1', () => console.log(`listening ${server.address().port}`));
