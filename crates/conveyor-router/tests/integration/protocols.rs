//! WebSocket upgrade passthrough and HTTP/2 (prior knowledge) clients.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Version};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{backend, backend_at, config, read, start, upstream};

/// A WebSocket server that echoes every text and binary message.
async fn ws_echo() -> std::net::SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(message)) = ws.next().await {
                    if (message.is_text() || message.is_binary()) && ws.send(message).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_echo_through_the_router() {
    let upstream = ws_echo().await;
    let backend = backend_at("ws", 10_000, vec![upstream]);
    let router = start(config(vec![backend], None)).await;
    let (mut ws, response) = tokio_tungstenite::connect_async(format!("ws://{}/socket", router.addr))
        .await
        .expect("handshake");
    assert_eq!(response.status(), 101);
    assert_eq!(
        response.headers().get("x-conveyor-version").map(|v| v.as_bytes()),
        Some(&b"ws"[..])
    );
    for i in 0..10 {
        let text = format!("hello {i}");
        ws.send(Message::text(text.clone())).await.expect("send");
        let echoed = ws.next().await.expect("a message").expect("not an error");
        assert_eq!(echoed, Message::text(text));
    }
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .expect("send");
    assert_eq!(
        ws.next().await.expect("message").expect("ok"),
        Message::binary(vec![0u8, 1, 2, 255])
    );
    ws.close(None).await.expect("close");
    let metrics = router.router.metrics();
    assert_eq!((metrics[0].requests, metrics[0].errors_5xx), (1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_prior_knowledge_clients_are_proxied() {
    let blue = upstream("blue").await;
    let router = start(config(vec![backend("blue", 10_000, &[&blue])], None)).await;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http();
    for _ in 0..10 {
        let request = Request::get(format!("http://{}/hello", router.addr))
            .header("x-user-id", "7")
            .body(Full::default())
            .expect("request");
        let response = client.request(request).await.expect("response");
        assert_eq!(response.version(), Version::HTTP_2);
        let answer = read(response).await.expect("body");
        assert_eq!(
            (answer.status.as_u16(), answer.body.as_str(), answer.version()),
            (200, "blue", "blue")
        );
        // The upstream saw the HTTP/2 authority as its Host header.
        assert_eq!(answer.header("x-seen-host"), router.addr.to_string());
    }
    let post = Request::post(format!("http://{}/echo", router.addr))
        .body(Full::new(Bytes::from_static(b"over h2")))
        .expect("request");
    let answer = read(client.request(post).await.expect("response"))
        .await
        .expect("body");
    assert_eq!(answer.body, "over h2");
}
