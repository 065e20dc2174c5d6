//! A request body that must arrive whole within a time limit.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The body did not arrive within the limit (`http.body_read_timeout`).
    #[error("the request body did not arrive within {0:?}")]
    Timeout(Duration),
    /// The connection failed while the body was read.
    #[error(transparent)]
    Read(#[from] hyper::Error),
}

/// A body from the connection, whose every frame must arrive before a deadline. The clock
/// starts the first time a read has to wait, so a request queued before its handler reads
/// its body (see [`super::requests`]) loses none of its time.
#[derive(Debug)]
pub struct DeadlineBody {
    inner: Incoming,
    timeout: Duration,
    deadline: Option<Pin<Box<Sleep>>>,
}

impl DeadlineBody {
    /// `inner`, to be read whole within `timeout`.
    pub fn new(inner: Incoming, timeout: Duration) -> Self {
        Self {
            inner,
            timeout,
            deadline: None,
        }
    }
}

impl Body for DeadlineBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|frame| frame.map_err(BodyError::Read)));
        }
        let timeout = this.timeout;
        let deadline = this
            .deadline
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match deadline.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Some(Err(BodyError::Timeout(timeout)))),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The time limit a body read failed on, if that is why it failed.
pub fn timed_out(error: &axum::Error) -> Option<Duration> {
    let source = std::error::Error::source(error)?;
    match source.downcast_ref::<BodyError>() {
        Some(BodyError::Timeout(limit)) => Some(*limit),
        _ => None,
    }
}
