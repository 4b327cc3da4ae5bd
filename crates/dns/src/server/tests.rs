use std::collections::BTreeMap;

use hickory_proto::op::Edns;
use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::*;
use crate::records::{SERVICE_NAME_LABEL, Snapshot};

fn service(name: &str, cluster_ip: &str) -> Service {
    Service {
        metadata: ObjectMeta {
            namespace: Some("default".to_string()),
            name: Some(name.to_string()),
            ..Default::default()
        },
        spec: Some(ServiceSpec {
            cluster_ip: Some(cluster_ip.to_string()),
            ..Default::default()
        }),
        status: None,
    }
}

/// `web` (ClusterIP 10.96.0.10) and `big`, a headless Service of 200 endpoints.
fn resolver() -> Resolver {
    let slice = EndpointSlice {
        metadata: ObjectMeta {
            namespace: Some("default".to_string()),
            name: Some("big-1".to_string()),
            labels: Some(BTreeMap::from([(
                SERVICE_NAME_LABEL.to_string(),
                "big".to_string(),
            )])),
            ..Default::default()
        },
        address_type: "IPv4".to_string(),
        endpoints: (0..200)
            .map(|i| Endpoint {
                addresses: vec![format!("10.244.{}.{}", i / 100, i % 100 + 1)],
                ..Default::default()
            })
            .collect(),
        ports: None,
    };
    let snapshot = Snapshot::build(
        "cluster.local",
        5,
        1,
        &[service("web", "10.96.0.10"), service("big", "None")],
        &[slice],
    );
    Resolver::new(
        ZoneReader::fixed(snapshot),
        Forwarder::new(Vec::new(), Duration::from_millis(100)),
        Arc::new(Metrics::new()),
    )
}

fn query(name: &str, qtype: RecordType) -> Message {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    message
}

/// A pod's address: the usual client.
const POD: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(10, 244, 0, 5));

async fn ask(resolver: &Resolver, message: &Message, transport: Transport) -> Message {
    ask_from(resolver, message, transport, POD).await
}

async fn ask_from(
    resolver: &Resolver,
    message: &Message,
    transport: Transport,
    client: IpAddr,
) -> Message {
    let bytes = resolver
        .answer(&message.to_vec().unwrap(), transport, client)
        .await
        .expect("an answer");
    let reply = Message::from_vec(&bytes).unwrap();
    assert_eq!(reply.metadata.id, message.metadata.id);
    assert_eq!(reply.metadata.message_type, MessageType::Response);
    reply
}

#[tokio::test]
async fn answers_are_authoritative_and_keep_the_question_spelling() {
    let resolver = resolver();
    let q = query("Web.Default.svc.cluster.local.", RecordType::A);
    let reply = ask(&resolver, &q, Transport::Udp).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.metadata.authoritative);
    assert!(reply.metadata.recursion_desired);
    assert_eq!(reply.queries, q.queries);
    assert_eq!(reply.answers.len(), 1);
    assert_eq!(reply.answers[0].name, *q.queries[0].name());
    assert_eq!(reply.answers[0].ttl, 5);
    assert_eq!(
        reply.answers[0].data,
        WireData::A(A("10.96.0.10".parse().unwrap()))
    );
}

#[tokio::test]
async fn nxdomain_and_nodata_carry_the_soa() {
    let resolver = resolver();
    let reply = ask(
        &resolver,
        &query("nope.default.svc.cluster.local.", RecordType::A),
        Transport::Udp,
    )
    .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    assert!(reply.answers.is_empty());
    assert_eq!(reply.authorities.len(), 1);
    assert_eq!(reply.authorities[0].record_type(), RecordType::SOA);

    let reply = ask(
        &resolver,
        &query("web.default.svc.cluster.local.", RecordType::AAAA),
        Transport::Udp,
    )
    .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.answers.is_empty());
    assert_eq!(reply.authorities[0].record_type(), RecordType::SOA);
}

#[tokio::test]
async fn large_udp_answers_are_truncated_and_complete_over_tcp() {
    let resolver = resolver();
    let q = query("big.default.svc.cluster.local.", RecordType::A);
    let reply = ask(&resolver, &q, Transport::Udp).await;
    assert!(reply.metadata.truncation, "200 A records exceed 512 bytes");
    assert!(reply.answers.is_empty());

    let reply = ask(&resolver, &q, Transport::Tcp).await;
    assert!(!reply.metadata.truncation);
    assert_eq!(reply.answers.len(), 200);
}

#[tokio::test]
async fn edns_queries_get_an_opt_record_and_a_larger_limit() {
    let resolver = resolver();
    let mut q = query("web.default.svc.cluster.local.", RecordType::A);
    let mut edns = Edns::new();
    edns.set_max_payload(4096);
    q.set_edns(edns);
    let reply = ask(&resolver, &q, Transport::Udp).await;
    let edns = reply.edns.expect("an OPT record in the reply");
    assert_eq!(edns.max_payload(), MAX_UDP_PAYLOAD);
}

#[tokio::test]
async fn malformed_and_unsupported_messages_get_error_codes() {
    let resolver = resolver();
    // A header and garbage: FORMERR with the same ID.
    let bytes = resolver
        .answer(
            &[0xab, 0xcd, 0x01, 0x00, 0x00, 0x05, 0xff],
            Transport::Udp,
            POD,
        )
        .await
        .expect("an answer");
    let reply = Message::from_vec(&bytes).unwrap();
    assert_eq!(reply.metadata.id, 0xabcd);
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);
    // Too short for an ID: nothing to answer.
    assert!(
        resolver
            .answer(&[0xab], Transport::Udp, POD)
            .await
            .is_none()
    );

    let mut status = query("web.default.svc.cluster.local.", RecordType::A);
    status.metadata.op_code = OpCode::Status;
    let reply = ask(&resolver, &status, Transport::Udp).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NotImp);

    let mut two = query("web.default.svc.cluster.local.", RecordType::A);
    two.add_query(Query::query(
        Name::from_ascii("big.default.svc.cluster.local.").unwrap(),
        RecordType::A,
    ));
    let reply = ask(&resolver, &two, Transport::Udp).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::FormErr);

    // A response is never answered (no reflection loops).
    let mut response = query("web.default.svc.cluster.local.", RecordType::A);
    response.metadata.message_type = MessageType::Response;
    assert!(
        resolver
            .answer(&response.to_vec().unwrap(), Transport::Udp, POD)
            .await
            .is_none()
    );
}

#[tokio::test]
async fn outside_names_without_upstreams_are_servfail_and_counted() {
    let resolver = resolver();
    let reply = ask(
        &resolver,
        &query("example.com.", RecordType::A),
        Transport::Udp,
    )
    .await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    assert!(!reply.metadata.authoritative);
    let metrics = resolver.metrics.render();
    assert!(
        metrics
            .contains(r#"rkube_dns_queries_total{type="A",rcode="SERVFAIL",source="forward"} 1"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn outside_names_are_refused_to_clients_outside_the_allowed_networks() {
    let resolver = resolver().forward_only_for(vec![
        crate::forward::parse_network("10.244.0.0/16").unwrap(),
        crate::forward::parse_network("192.0.2.1").unwrap(),
    ]);
    let outside = query("example.com.", RecordType::A);
    let stranger: IpAddr = "192.0.2.9".parse().unwrap();
    let reply = ask_from(&resolver, &outside, Transport::Udp, stranger).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
    // Over TCP too, and for an IPv4 client that a dual-stack socket reports as IPv6.
    let mapped: IpAddr = "::ffff:192.0.2.9".parse().unwrap();
    let reply = ask_from(&resolver, &outside, Transport::Tcp, mapped).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::Refused);
    // The cluster's own names are answered for anyone.
    let inside = query("web.default.svc.cluster.local.", RecordType::A);
    let reply = ask_from(&resolver, &inside, Transport::Udp, stranger).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert_eq!(reply.answers.len(), 1);
    // Allowed clients are forwarded (no upstream here: SERVFAIL, not REFUSED).
    for client in [
        POD,
        "192.0.2.1".parse().unwrap(),
        "::ffff:10.244.3.3".parse().unwrap(),
    ] {
        let reply = ask_from(&resolver, &outside, Transport::Udp, client).await;
        assert_eq!(
            reply.metadata.response_code,
            ResponseCode::ServFail,
            "{client}"
        );
    }
}

#[tokio::test]
async fn sockets_bind_udp_and_tcp_on_one_free_port() {
    let sockets = Sockets::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = sockets.local_addr().unwrap();
    assert_ne!(addr.port(), 0);
    assert_eq!(sockets.tcp.local_addr().unwrap(), addr);
}

#[tokio::test]
async fn before_the_caches_list_cluster_names_are_servfail_not_nxdomain() {
    let resolver = Resolver::new(
        ZoneReader::unsynced(Snapshot::build("cluster.local", 5, 1, &[], &[])),
        Forwarder::new(Vec::new(), Duration::from_millis(100)),
        Arc::new(Metrics::new()),
    );
    let q = query("web.default.svc.cluster.local.", RecordType::A);
    let reply = ask(&resolver, &q, Transport::Udp).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::ServFail);
    assert!(!reply.metadata.authoritative);
    assert!(reply.answers.is_empty());
}
