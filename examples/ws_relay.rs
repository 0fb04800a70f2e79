//! The floor of the stack, a peer for `scripts/bench.sh`: a bare
//! tokio-tungstenite server on a loopback port it prints. `/echo` sends each
//! message back; `/fan` sends each message to every other `/fan` client.
//! Its one tuning is elementd's: a 512-byte read buffer (the 128 KiB default
//! would be most of an idle connection's memory).
use futures::{SinkExt, StreamExt};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio_tungstenite::tungstenite::{protocol::WebSocketConfig, Message};

type Peers = Arc<Mutex<HashMap<u64, tokio::sync::mpsc::UnboundedSender<Message>>>>;

#[tokio::main]
async fn main() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    println!("listening {}", listener.local_addr().unwrap().port());
    let peers = Peers::default();
    let conf = WebSocketConfig::default().read_buffer_size(512);
    for id in 0u64.. {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let peers = peers.clone();
        tokio::spawn(async move {
            // The request line says which endpoint (loopback: it comes whole).
            let mut head = [0u8; 8];
            let fan = tcp.peek(&mut head).await.is_ok() && head.starts_with(b"GET /fan");
            let Ok(ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(conf)).await else {
                return;
            };
            let (mut sink, mut stream) = ws.split();
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            if fan {
                peers.lock().unwrap().insert(id, tx.clone());
            }
            tokio::spawn(async move {
                while let Some(m) = rx.recv().await {
                    if sink.send(m).await.is_err() {
                        break;
                    }
                }
            });
            while let Some(Ok(m)) = stream.next().await {
                if !(m.is_text() || m.is_binary()) {
                    continue;
                } else if !fan {
                    let _ = tx.send(m);
                } else {
                    for (_, p) in peers.lock().unwrap().iter().filter(|(k, _)| **k != id) {
                        let _ = p.send(m.clone());
                    }
                }
            }
            peers.lock().unwrap().remove(&id);
        });
    }
}
