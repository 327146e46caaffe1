//! An HTTP/1.1 client (hyper 1.x) whose connections go through an OpenVPN tunnel run by the
//! smol driver inside this process: no listening socket, no root, names resolved by the
//! tunnel's DNS.
//!
//! ```text
//! cargo run --example hyper_client -- --config profile.ovpn --dns 10.8.0.1 http://web.erebus.test:8080/
//! ```
//!
//! The pieces: [`erebus::connector::add_internal_listener`] gives the client the front end
//! connectors use, [`erebus::smol_driver::SmolDriver::connector`] hands out a connector, each
//! `connect` returns a futures-io stream, and `rt.rs` adapts that to hyper's runtime traits;
//! hyper's connection task runs on smol's executor.
//!
//! Exit status: 0 for a 2xx answer, 1 for any other HTTP status, 2 when the page could not be
//! fetched (bad profile, tunnel down, connection refused, ...).

mod rt;
#[path = "../support/session.rs"]
mod session;

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use erebus::smol_driver::{Connector, SmolDriver};
use erebus_sansio::io::Event;
use hyper::header::{HOST, USER_AGENT};
use hyper::{Request, Uri};
use smol::Timer;
use smol::future::FutureExt;

use crate::rt::{FuturesIo, read_body};
use crate::session::{Args, Session};

fn main() -> ExitCode {
    session::init_logging();
    let args = Args::parse();
    match smol::block_on(run(&args)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(error) => {
            eprintln!("hyper_client: {error:#}");
            ExitCode::from(2)
        }
    }
}

/// Runs the session for as long as the fetch takes; whether the answer was a success.
async fn run(args: &Args) -> anyhow::Result<bool> {
    let uri: Uri = args.url.parse().context("not a URL")?;
    anyhow::ensure!(
        uri.scheme_str() == Some("http"),
        "only http:// URLs: this example speaks no TLS"
    );
    let session = Session::new(args)?;
    let mut driver = SmolDriver::new(session.client, session.clock, Vec::new())?;
    driver.on_event(|event| {
        if let Event::Reconnecting { reason, retry_in } = event {
            eprintln!("hyper_client: reconnecting in {retry_in:?}: {reason}");
        }
    });
    let connector = driver.connector(session.internal);
    let stop = driver.stop_handle();
    let running = smol::spawn(async move { driver.run().await });

    let up_timeout = Duration::from_secs(args.up_timeout);
    let fetched = fetch(&connector, &uri, up_timeout).await;
    // A graceful end (the server hears that we leave), whatever the fetch gave.
    stop.stop();
    let failure = running.await?;
    tracing::debug!("session ended: {failure}");
    fetched
}

/// Waits for the tunnel, sends one GET and writes the body to stdout.
async fn fetch(connector: &Connector, uri: &Uri, up_timeout: Duration) -> anyhow::Result<bool> {
    let host = uri.host().context("the URL names no host")?;
    let port = uri.port_u16().unwrap_or(80);
    let authority = uri.authority().context("the URL names no host")?.as_str();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());

    let timeout = async {
        Timer::after(up_timeout).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "the tunnel did not come up in time",
        ))
    };
    connector.until_up().or(timeout).await?;
    let stream = connector
        .connect(host, port)
        .await
        .with_context(|| format!("cannot connect to {host}:{port} through the tunnel"))?;

    let (mut sender, connection) =
        hyper::client::conn::http1::handshake::<_, String>(FuturesIo::new(stream)).await?;
    let connection = smol::spawn(connection);
    let request = Request::get(path)
        .header(HOST, authority)
        .header(USER_AGENT, "erebus-hyper-client")
        .body(String::new())?;
    let response = sender.send_request(request).await?;
    let status = response.status();
    eprintln!("{:?} {status}", response.version());
    let body = read_body(response.into_body()).await?;
    std::io::stdout().write_all(&body)?;
    std::io::stdout().flush()?;
    // The connection task ends with the exchange; dropping it cancels whatever is left.
    drop(sender);
    drop(connection);
    Ok(status.is_success())
}
