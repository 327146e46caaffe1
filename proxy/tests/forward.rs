//! The port-forward front end.

mod common;

use std::time::Duration;

use common::{Harness, connect, name};
use erebus_proxy::{Action, ForwardSpec, FrontEnd, ProxyConfig, UpstreamFailure};

fn forward() -> Harness {
    Harness::new(
        FrontEnd::Forward {
            host: name("git.corp"),
            port: 22,
        },
        ProxyConfig::default(),
    )
}

#[test]
fn connects_at_once_and_relays() {
    let mut h = forward();
    assert_eq!(h.take_actions(), vec![connect("git.corp", 22)]);
    h.client_sends(b"SSH-2.0-client\r\n");
    assert!(h.take_upstream().is_empty());
    h.connected();
    assert_eq!(h.take_upstream(), b"SSH-2.0-client\r\n");
    h.upstream_sends(b"SSH-2.0-server\r\n");
    assert_eq!(h.take_client(), b"SSH-2.0-server\r\n");
    h.client_closes();
    h.upstream_closes();
    assert_eq!(
        h.take_actions(),
        vec![
            Action::ShutdownUpstream,
            Action::ShutdownClient,
            Action::CloseUpstream,
            Action::CloseClient
        ]
    );
}

#[test]
fn failure_closes_the_client() {
    let mut h = forward();
    h.take_actions();
    h.failed(UpstreamFailure::Refused);
    assert_eq!(
        h.take_actions(),
        vec![Action::CloseUpstream, Action::CloseClient]
    );
    assert!(h.conn.is_closed());
}

#[test]
fn connect_timeout_closes_the_client() {
    let mut h = forward();
    h.take_actions();
    h.advance(Duration::from_secs(10));
    assert_eq!(
        h.take_actions(),
        vec![Action::CloseUpstream, Action::CloseClient]
    );
}

#[test]
fn spec_feeds_the_front_end() {
    let spec = ForwardSpec::parse("2222:git.corp:22").unwrap();
    let mut h = Harness::new(
        FrontEnd::Forward {
            host: spec.host,
            port: spec.host_port,
        },
        ProxyConfig::default(),
    );
    assert_eq!(h.take_actions(), vec![connect("git.corp", 22)]);
}

#[test]
fn client_data_before_connect_pauses_at_the_buffer_size() {
    let mut h = Harness::new(
        FrontEnd::Forward {
            host: name("git.corp"),
            port: 22,
        },
        ProxyConfig {
            buffer_size: 64,
            ..ProxyConfig::default()
        },
    );
    h.take_actions();
    h.client_sends(&[7; 65]);
    assert_eq!(h.take_actions(), vec![Action::PauseClient]);
    h.connected();
    assert_eq!(h.take_actions(), vec![Action::ResumeClient]);
    assert_eq!(h.take_upstream(), vec![7; 65]);
}
