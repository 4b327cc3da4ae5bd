//! rkube-dns against a real apiserver: Services and EndpointSlices created through the
//! client become DNS answers over UDP and TCP, unknown names are NXDOMAIN, and names outside
//! the cluster domain are relayed to an upstream resolver.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, PTR, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::discovery::v1::{Endpoint, EndpointConditions, EndpointPort, EndpointSlice};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rkube_client::{Api, DeleteParams};
use rkube_dns::Options;
use rkube_testing::{TestApiserver, eventually};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::watch;

const WAIT: Duration = Duration::from_secs(20);

fn name(s: &str) -> Name {
    Name::from_ascii(s).expect("valid name")
}

fn query(qname: &str, qtype: RecordType) -> Vec<u8> {
    let mut message = Message::query();
    message.metadata.recursion_desired = true;
    message.add_query(Query::query(name(qname), qtype));
    message.to_vec().expect("encodes")
}

/// One query over UDP, with a deadline.
async fn ask(server: SocketAddr, qname: &str, qtype: RecordType) -> Message {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind");
    socket.connect(server).await.expect("connect");
    let packet = query(qname, qtype);
    socket.send(&packet).await.expect("send");
    let mut buf = vec![0u8; 65_535];
    let n = tokio::time::timeout(Duration::from_secs(5), socket.recv(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("no answer to {qname} {qtype} within 5s"))
        .expect("recv");
    let reply = Message::from_vec(&buf[..n]).expect("decodes");
    assert_eq!(
        reply.metadata.id,
        u16::from_be_bytes([packet[0], packet[1]])
    );
    reply
}

/// One query over TCP.
async fn ask_tcp(server: SocketAddr, qname: &str, qtype: RecordType) -> Message {
    let mut stream = TcpStream::connect(server).await.expect("connect");
    let packet = query(qname, qtype);
    let len = u16::try_from(packet.len()).expect("small query");
    stream.write_all(&len.to_be_bytes()).await.expect("write");
    stream.write_all(&packet).await.expect("write");
    let len = stream.read_u16().await.expect("answer length");
    let mut buf = vec![0u8; usize::from(len)];
    stream.read_exact(&mut buf).await.expect("answer");
    Message::from_vec(&buf).expect("decodes")
}

fn addresses(reply: &Message) -> Vec<IpAddr> {
    let mut ips: Vec<IpAddr> = reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(A(ip)) => Some(IpAddr::V4(*ip)),
            RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
            _ => None,
        })
        .collect();
    ips.sort();
    ips
}

fn describe(reply: &Message) -> String {
    format!(
        "{} {:?}",
        reply.metadata.response_code,
        reply
            .answers
            .iter()
            .map(Record::to_string)
            .collect::<Vec<_>>()
    )
}

/// A "resolver" on UDP that knows `example.test` (A 192.0.2.7) and nothing else.
async fn upstream() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind upstream");
    let addr = socket.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        while let Ok((n, peer)) = socket.recv_from(&mut buf).await {
            let Ok(request) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut reply = Message::response(request.metadata.id, request.metadata.op_code);
            reply.add_queries(request.queries.iter().cloned());
            match request.queries.first() {
                Some(q) if q.name() == &name("example.test.") => {
                    reply.add_answer(Record::from_rdata(
                        q.name().clone(),
                        60,
                        RData::A(A("192.0.2.7".parse().expect("ip"))),
                    ));
                }
                _ => reply.metadata.response_code = ResponseCode::NXDomain,
            }
            if let Ok(bytes) = reply.to_vec() {
                let _ = socket.send_to(&bytes, peer).await;
            }
        }
    });
    addr
}

fn service(name: &str, spec: ServiceSpec) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: Some("default".to_string()),
            ..Default::default()
        },
        spec: Some(spec),
        status: None,
    }
}

fn named_port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.to_string()),
        port,
        protocol: Some("TCP".to_string()),
        ..Default::default()
    }
}

fn endpoint(ip: &str, hostname: Option<&str>, ready: bool) -> Endpoint {
    Endpoint {
        addresses: vec![ip.to_string()],
        hostname: hostname.map(str::to_string),
        conditions: Some(EndpointConditions {
            ready: Some(ready),
            ..Default::default()
        }),
        ..Default::default()
    }
}

#[tokio::test]
async fn serves_the_cluster_zone_and_forwards_the_rest() {
    let api = TestApiserver::start().await;
    let client = api.client();
    let upstream = upstream().await;
    let (stop_tx, stop) = watch::channel(false);
    let options = Options {
        listen: "127.0.0.1:0".parse().expect("addr"),
        upstreams: vec![upstream],
        ..Options::default()
    };
    let running = rkube_dns::start(&client, &options, stop.clone())
        .await
        .expect("dns server starts");
    let dns = running.addr;
    let health = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind health");
    let health_addr = health.local_addr().expect("addr");
    let http = tokio::spawn(rkube_dns::http::serve(
        health,
        running.zone.clone(),
        running.metrics.clone(),
        stop.clone(),
    ));
    tokio::time::timeout(WAIT, running.zone.wait_synced())
        .await
        .expect("caches sync within the deadline");
    assert!(
        http_get(health_addr, "/readyz")
            .await
            .starts_with("HTTP/1.1 200"),
        "ready once synced"
    );

    // The apiserver's own `kubernetes` Service exists from the start.
    let reply = ask(dns, "kubernetes.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(reply.answers.len(), 1, "{}", describe(&reply));

    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let web = services
        .create(&service(
            "web",
            ServiceSpec {
                ports: Some(vec![named_port("http", 80)]),
                ..Default::default()
            },
        ))
        .await
        .expect("create web");
    let web_ip: IpAddr = web
        .spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .expect("a cluster IP was allocated")
        .parse()
        .expect("an IP");
    services
        .create(&service(
            "db",
            ServiceSpec {
                cluster_ip: Some("None".to_string()),
                ports: Some(vec![named_port("pg", 5432)]),
                ..Default::default()
            },
        ))
        .await
        .expect("create db");
    services
        .create(&service(
            "ext",
            ServiceSpec {
                type_: Some("ExternalName".to_string()),
                external_name: Some("example.test".to_string()),
                ..Default::default()
            },
        ))
        .await
        .expect("create ext");
    let slices: Api<EndpointSlice> = Api::namespaced(client.clone(), "default");
    slices
        .create(&EndpointSlice {
            metadata: ObjectMeta {
                name: Some("db-abcde".to_string()),
                namespace: Some("default".to_string()),
                labels: Some(BTreeMap::from([(
                    "kubernetes.io/service-name".to_string(),
                    "db".to_string(),
                )])),
                ..Default::default()
            },
            address_type: "IPv4".to_string(),
            endpoints: vec![
                endpoint("10.244.1.5", Some("db-0"), true),
                endpoint("10.244.1.6", None, true),
                endpoint("10.244.1.7", Some("db-2"), false),
            ],
            ports: Some(vec![EndpointPort {
                name: Some("pg".to_string()),
                port: Some(5432),
                protocol: Some("TCP".to_string()),
                ..Default::default()
            }]),
        })
        .await
        .expect("create slice");

    // ClusterIP Service: its allocated address.
    let reply = eventually("web's A record", WAIT, || async {
        let reply = ask(dns, "web.default.svc.cluster.local.", RecordType::A).await;
        if addresses(&reply) == vec![web_ip] {
            Ok(reply)
        } else {
            Err(describe(&reply))
        }
    })
    .await;
    assert!(reply.metadata.authoritative);
    assert_eq!(reply.answers[0].ttl, 5);

    // Headless Service: the ready endpoints, once the slice has arrived.
    let ready: Vec<IpAddr> = vec![
        "10.244.1.5".parse().expect("ip"),
        "10.244.1.6".parse().expect("ip"),
    ];
    eventually("db's endpoint addresses", WAIT, || async {
        let reply = ask(dns, "db.default.svc.cluster.local.", RecordType::A).await;
        if addresses(&reply) == ready {
            Ok(())
        } else {
            Err(describe(&reply))
        }
    })
    .await;

    // StatefulSet-style hostname through the headless Service.
    let reply = ask(dns, "db-0.db.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(
        addresses(&reply),
        vec!["10.244.1.5".parse::<IpAddr>().expect("ip")],
        "{}",
        describe(&reply)
    );
    let reply = ask(dns, "db-2.db.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(
        reply.metadata.response_code,
        ResponseCode::NXDomain,
        "a not-ready endpoint has no name: {}",
        describe(&reply)
    );

    // SRV of a ClusterIP Service's named port.
    let reply = ask(
        dns,
        "_http._tcp.web.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    let srv: Vec<&SRV> = reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => Some(srv),
            _ => None,
        })
        .collect();
    assert_eq!(srv.len(), 1, "{}", describe(&reply));
    assert_eq!(srv[0].port, 80);
    assert_eq!(srv[0].target, name("web.default.svc.cluster.local."));
    assert_eq!(
        reply.additionals.len(),
        1,
        "the target's address is additional"
    );

    // SRV of a headless Service: one per ready endpoint, named by hostname or address.
    let reply = ask(
        dns,
        "_pg._tcp.db.default.svc.cluster.local.",
        RecordType::SRV,
    )
    .await;
    let mut targets: Vec<String> = reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(srv) => Some(srv.target.to_ascii()),
            _ => None,
        })
        .collect();
    targets.sort();
    assert_eq!(
        targets,
        vec![
            "10-244-1-6.db.default.svc.cluster.local.".to_string(),
            "db-0.db.default.svc.cluster.local.".to_string(),
        ]
    );

    // AAAA of an IPv4-only Service: NODATA, not NXDOMAIN.
    let reply = ask(dns, "web.default.svc.cluster.local.", RecordType::AAAA).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NoError);
    assert!(reply.answers.is_empty());

    // Pod names.
    let reply = ask(dns, "10-244-3-9.default.pod.cluster.local.", RecordType::A).await;
    assert_eq!(
        addresses(&reply),
        vec!["10.244.3.9".parse::<IpAddr>().expect("ip")]
    );

    // ExternalName: a CNAME to the external name, which is resolved upstream too.
    let reply = ask(dns, "ext.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(
        reply.answers.first().map(|r| &r.data),
        Some(&RData::CNAME(CNAME(name("example.test.")))),
        "{}",
        describe(&reply)
    );
    assert_eq!(
        addresses(&reply),
        vec!["192.0.2.7".parse::<IpAddr>().expect("ip")],
        "{}",
        describe(&reply)
    );
    let reply = ask(dns, "ext.default.svc.cluster.local.", RecordType::CNAME).await;
    assert_eq!(reply.answers.len(), 1, "{}", describe(&reply));

    // Unknown names in the zone.
    let reply = ask(dns, "nope.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);
    assert_eq!(reply.authorities.len(), 1, "NXDOMAIN carries the SOA");

    // Names outside the zone go to the upstream, and its answer comes back.
    let reply = ask(dns, "example.test.", RecordType::A).await;
    assert_eq!(
        addresses(&reply),
        vec!["192.0.2.7".parse::<IpAddr>().expect("ip")],
        "{}",
        describe(&reply)
    );
    let reply = ask(dns, "unknown.test.", RecordType::A).await;
    assert_eq!(reply.metadata.response_code, ResponseCode::NXDomain);

    // Reverse lookup of the ClusterIP.
    let IpAddr::V4(v4) = web_ip else {
        panic!("an IPv4 cluster IP, got {web_ip}")
    };
    let [a, b, c, d] = v4.octets();
    let reply = ask(
        dns,
        &format!("{d}.{c}.{b}.{a}.in-addr.arpa."),
        RecordType::PTR,
    )
    .await;
    assert_eq!(
        reply.answers.first().map(|r| &r.data),
        Some(&RData::PTR(PTR(name("web.default.svc.cluster.local.")))),
        "{}",
        describe(&reply)
    );

    // TCP answers the same.
    let reply = ask_tcp(dns, "web.default.svc.cluster.local.", RecordType::A).await;
    assert_eq!(addresses(&reply), vec![web_ip]);

    // A deleted Service disappears.
    services
        .delete("web", &DeleteParams::default())
        .await
        .expect("delete web");
    eventually("web to be gone", WAIT, || async {
        let reply = ask(dns, "web.default.svc.cluster.local.", RecordType::A).await;
        if reply.metadata.response_code == ResponseCode::NXDomain {
            Ok(())
        } else {
            Err(describe(&reply))
        }
    })
    .await;

    let metrics = http_get(health_addr, "/metrics").await;
    assert!(
        metrics.contains(r#"rkube_dns_queries_total{type="A",rcode="NOERROR",source="forward"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"type="SRV",rcode="NOERROR",source="cluster""#),
        "{metrics}"
    );

    let _ = stop_tx.send(true);
    tokio::time::timeout(WAIT, running.wait())
        .await
        .expect("the server stops after the signal");
    let _ = http.await;
    api.shutdown().await;
}

/// A plain HTTP/1.1 GET; the whole response as text.
async fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write request");
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .await
        .expect("read response");
    response
}

#[tokio::test]
async fn a_daemon_publishes_itself_as_the_kube_dns_service_once() {
    use k8s_openapi::api::core::v1::Service;
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use rkube_client::Api;
    let api = TestApiserver::start().await;
    let client = api.client();
    let publication = rkube_dns::publish::Publication {
        namespace: "kube-system".into(),
        name: "kube-dns".into(),
        cluster_ip: "10.96.0.10".parse().unwrap(),
        endpoint: "192.0.2.7:10053".parse().unwrap(),
    };
    assert!(publication.reconcile(&client).await.expect("publish"));
    assert!(
        !publication.reconcile(&client).await.expect("publish again"),
        "a second pass must write nothing"
    );
    let svc = Api::<Service>::namespaced(client.clone(), "kube-system")
        .get("kube-dns")
        .await
        .expect("service");
    assert_eq!(svc.spec.unwrap().cluster_ip.as_deref(), Some("10.96.0.10"));
    let slice = Api::<EndpointSlice>::namespaced(client.clone(), "kube-system")
        .get("kube-dns-rkube-dns")
        .await
        .expect("slice");
    assert_eq!(slice.endpoints[0].addresses, ["192.0.2.7"]);
    // The server moved: the slice follows.
    let moved = rkube_dns::publish::Publication {
        endpoint: "192.0.2.8:10053".parse().unwrap(),
        ..publication
    };
    assert!(moved.reconcile(&client).await.expect("publish moved"));
    let slice = Api::<EndpointSlice>::namespaced(client, "kube-system")
        .get("kube-dns-rkube-dns")
        .await
        .expect("slice");
    assert_eq!(slice.endpoints[0].addresses, ["192.0.2.8"]);
}
