//! hyper's runtime I/O traits over futures-io streams (what smol and a connector's stream
//! implement), and reading a whole response body without extra crates.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::body::{Body, Incoming};
use hyper::rt::ReadBufCursor;
use smol::io::{AsyncRead, AsyncWrite};

/// Bytes read at a time. hyper hands out a buffer that may be uninitialised, which safe code
/// cannot give to `AsyncRead`; reading into this scratch first costs one copy.
const READ_CHUNK: usize = 16 * 1024;

/// A futures-io stream seen as a hyper connection.
pub(crate) struct FuturesIo<T> {
    inner: T,
    scratch: Box<[u8]>,
}

impl<T> FuturesIo<T> {
    /// Wraps `inner`.
    pub(crate) fn new(inner: T) -> Self {
        Self {
            inner,
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
        }
    }
}

impl<T: AsyncRead + Unpin> hyper::rt::Read for FuturesIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        mut buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let want = buf.remaining().min(this.scratch.len());
        let Some(scratch) = this.scratch.get_mut(..want) else {
            return Poll::Ready(Ok(()));
        };
        match Pin::new(&mut this.inner).poll_read(cx, scratch) {
            Poll::Ready(Ok(n)) => {
                // Zero bytes read is the end of the stream, as hyper expects it.
                buf.put_slice(scratch.get(..n).unwrap_or_default());
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncWrite + Unpin> hyper::rt::Write for FuturesIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    /// hyper's shutdown is futures-io's close: the writing side ends (a FIN through the
    /// tunnel).
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_close(cx)
    }
}

/// Reads a response body to its end.
///
/// # Errors
///
/// What hyper reports: the connection failed or the body was malformed.
pub(crate) async fn read_body(mut body: Incoming) -> Result<Vec<u8>, hyper::Error> {
    let mut bytes = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        // Trailers, the only other kind of frame, carry no body bytes.
        if let Ok(data) = frame?.into_data() {
            bytes.extend_from_slice(&data);
        }
    }
    Ok(bytes)
}
