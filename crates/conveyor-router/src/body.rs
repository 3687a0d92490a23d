//! The one body type the proxy moves in both directions: a streamed hyper body, or a small
//! in-memory one (empty retried requests, the router's own error answers).

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

/// A request or response body passing through the router.
#[derive(Debug)]
pub(crate) enum ProxyBody {
    /// Streamed from the other side, frame by frame.
    Incoming(Incoming),
    /// Held in memory; `None` once sent (or when empty).
    Full(Option<Bytes>),
}

impl ProxyBody {
    pub(crate) fn empty() -> Self {
        Self::Full(None)
    }

    pub(crate) fn text(text: &'static str) -> Self {
        Self::Full(Some(Bytes::from_static(text.as_bytes())))
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Self::Incoming(body) => Pin::new(body).poll_frame(cx),
            Self::Full(data) => Poll::Ready(data.take().map(|bytes| Ok(Frame::data(bytes)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Incoming(body) => body.is_end_stream(),
            Self::Full(data) => data.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Incoming(body) => body.size_hint(),
            Self::Full(data) => SizeHint::with_exact(data.as_ref().map_or(0, |bytes| bytes.len() as u64)),
        }
    }
}
