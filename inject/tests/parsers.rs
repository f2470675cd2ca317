//! Table and property tests for the annotation value parsers.

use proptest::prelude::*;
use skjold_inject::inject::annotations::*;

#[test]
fn quantity_table() {
    let ok: &[(&str, i128)] = &[
        ("0", 0),
        ("1", 1_000_000_000),
        ("100m", 100_000_000),
        ("0.1", 100_000_000),
        (".5", 500_000_000),
        ("1.", 1_000_000_000),
        ("2000m", 2_000_000_000),
        ("1k", 1_000_000_000_000),
        ("1e3", 1_000_000_000_000),
        ("1E-3", 1_000_000),
        ("128Mi", 128 * 1024 * 1024 * 1_000_000_000),
        ("1Gi", 1024 * 1024 * 1024 * 1_000_000_000),
        ("+5", 5_000_000_000),
        ("-5m", -5_000_000),
        ("1u", 1_000),
        ("1n", 1),
    ];
    for (input, nanos) in ok {
        assert_eq!(
            parse_quantity(input).map(|q| q.nanos()),
            Ok(*nanos),
            "{input}"
        );
    }
    for bad in [
        "",
        "lots",
        "m",
        "1mm",
        "1.2.3",
        "1 m",
        " 1",
        "1Mb",
        "0x10",
        "1e",
        "1e+",
        "1ee3",
        "1Ki1",
        "∞",
        "100mcores",
        "1e9999",
    ] {
        assert!(parse_quantity(bad).is_err(), "{bad:?} accepted");
    }
    assert!(parse_resource_quantity("-1").is_err());
    assert!(parse_resource_quantity("0").is_ok());
}

#[test]
fn cidr_table() {
    for ok in [
        "10.0.0.0/8",
        "0.0.0.0/0",
        "192.168.1.1/32",
        "::/0",
        "fd00::/8",
        "2001:db8::1/128",
    ] {
        assert!(parse_cidr(ok).is_ok(), "{ok}");
    }
    for bad in [
        "10.0.0/8",
        "10.0.0.0",
        "10.0.0.0/33",
        "::/129",
        "10.0.0.0/-1",
        "10.0.0.0/+8",
        "a/8",
        "/8",
        "10.0.0.0/",
    ] {
        assert!(parse_cidr(bad).is_err(), "{bad:?} accepted");
    }
    assert_eq!(parse_cidr_list("").unwrap(), vec![]);
    assert_eq!(parse_cidr_list(" 10.0.0.0/8 , ::/0 ").unwrap().len(), 2);
    assert!(parse_cidr_list("10.0.0.0/8,").is_err(), "trailing comma");
    assert_eq!(parse_cidr_selection("*").unwrap(), CidrSelection::All);
    assert!(parse_cidr_selection("*,10.0.0.0/8").is_err());
}

#[test]
fn port_table() {
    assert_eq!(
        parse_port_list("80, 443,8080").unwrap(),
        vec![80, 443, 8080]
    );
    assert_eq!(parse_port_list("").unwrap(), Vec::<u16>::new());
    assert_eq!(parse_port_list("  ").unwrap(), Vec::<u16>::new());
    for bad in [
        "0",
        "65536",
        "http",
        "80,,90",
        "-1",
        "80;90",
        "1e3",
        "99999999999",
    ] {
        assert!(parse_port_list(bad).is_err(), "{bad:?} accepted");
    }
    assert_eq!(parse_port_selection("*").unwrap(), PortSelection::All);
    assert_eq!(
        parse_port_selection("15020").unwrap(),
        PortSelection::Ports(vec![15020])
    );
    assert_eq!(parse_status_port("0"), Ok(0));
    assert!(parse_status_port("00x").is_err());
}

#[test]
fn bool_and_levels_table() {
    assert_eq!(parse_bool("true"), Ok(true));
    assert_eq!(parse_bool("False"), Ok(false));
    for bad in ["yes", "no", "", "TRUE ", "enabled"] {
        assert!(parse_bool(bad).is_err(), "{bad:?} accepted");
    }
    for ok in [
        "trace", "debug", "info", "warning", "warn", "error", "critical", "off",
    ] {
        assert!(parse_envoy_log_level(ok).is_ok(), "{ok}");
    }
    assert!(parse_envoy_log_level("verbose").is_err());
    assert!(parse_envoy_log_level("DEBUG").is_err());
    assert!(parse_component_log_level("misc:error,upstream:debug").is_ok());
    for bad in ["misc", "misc:loud", ":debug", "misc:error,", "a b:debug"] {
        assert!(parse_component_log_level(bad).is_err(), "{bad:?} accepted");
    }
    assert!(parse_agent_log_level("default:info,xds:debug").is_ok());
    assert!(
        parse_agent_log_level("debug").is_ok(),
        "bare level applies to default"
    );
    for bad in ["default:trace", "default:", "de fault:info", ""] {
        assert!(parse_agent_log_level(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn proxy_config_table() {
    let m = parse_proxy_config("holdApplicationUntilProxyStarts: true\nconcurrency: 2").unwrap();
    assert_eq!(m["holdApplicationUntilProxyStarts"], true);
    let m = parse_proxy_config(r#"{"proxyMetadata":{"ISTIO_META_DNS_CAPTURE":"true"}}"#).unwrap();
    assert!(m.contains_key("proxyMetadata"));
    assert!(parse_proxy_config("").unwrap().is_empty());
    for bad in [
        "holdApplicationUntilProxyStarts: maybe",
        "concurrency: -1",
        "concurrency: lots",
        "proxyMetadata: {A: 1}",
        "proxyMetadata: {'bad key': x}",
        "interceptionMode: MAGIC",
        "- a\n- b",
        "{not json",
        "statusPort: 0",
    ] {
        assert!(parse_proxy_config(bad).is_err(), "{bad:?} accepted");
    }
}

#[test]
fn misc_table() {
    assert!(parse_interface_list("eth0,net1").is_ok());
    assert!(parse_interface_list("averyveryverylongname").is_err());
    assert!(parse_interface_list("a/b").is_err());
    assert!(parse_dns_subdomain("my-bootstrap.v1").is_ok());
    assert!(parse_dns_subdomain("My_Bootstrap").is_err());
    assert!(parse_image("reg/istio/proxyv2:1.25").is_ok());
    assert!(parse_image("reg/istio proxy").is_err());
    assert_eq!(parse_image_type("distroless"), Ok("-distroless"));
    assert!(parse_image_type("alpine").is_err());
    assert_eq!(parse_non_negative_i32("30"), Ok(30));
    assert!(parse_non_negative_i32("-1").is_err());
    assert!(parse_non_negative_i32("4294967296").is_err());
}

proptest! {
    /// No input makes a parser panic.
    #[test]
    fn parsers_never_panic(s in "\\PC{0,40}") {
        let _ = parse_quantity(&s);
        let _ = parse_cidr_selection(&s);
        let _ = parse_port_selection(&s);
        let _ = parse_bool(&s);
        let _ = parse_component_log_level(&s);
        let _ = parse_agent_log_level(&s);
        let _ = parse_proxy_config(&s);
        let _ = parse_interface_list(&s);
        let _ = parse_non_negative_i32(&s);
    }

    /// Milli-units and their decimal form are the same quantity; order is preserved.
    #[test]
    fn milli_equals_decimal(a in 0u32..10_000_000, b in 0u32..10_000_000) {
        let qa = parse_quantity(&format!("{a}m")).unwrap();
        let decimal = format!("{}.{:03}", a / 1000, a % 1000);
        prop_assert_eq!(qa, parse_quantity(&decimal).unwrap());
        let qb = parse_quantity(&format!("{b}m")).unwrap();
        prop_assert_eq!(a.cmp(&b), qa.cmp(&qb));
    }

    /// Binary suffixes scale by 1024.
    #[test]
    fn binary_suffixes(n in 0u64..1_000_000) {
        let ki = parse_quantity(&format!("{n}Ki")).unwrap();
        let plain = parse_quantity(&format!("{}", n * 1024)).unwrap();
        prop_assert_eq!(ki, plain);
        let mi = parse_quantity(&format!("{n}Mi")).unwrap();
        prop_assert_eq!(mi, parse_quantity(&format!("{}Ki", n * 1024)).unwrap());
    }

    /// Every valid port list round-trips through its rendering.
    #[test]
    fn port_lists_round_trip(ports in proptest::collection::vec(1u16..=65535, 0..20), spaces in any::<bool>()) {
        let sep = if spaces { " , " } else { "," };
        let text = ports.iter().map(u16::to_string).collect::<Vec<_>>().join(sep);
        prop_assert_eq!(parse_port_list(&text).unwrap(), ports);
    }

    /// Out-of-range ports are refused.
    #[test]
    fn big_ports_refused(p in 65536u32..10_000_000) {
        prop_assert!(parse_port(&p.to_string()).is_err());
    }

    /// Any IPv4 address with a valid prefix parses; an invalid prefix never does.
    #[test]
    fn ipv4_cidrs(a in any::<[u8; 4]>(), prefix in 0u8..=40) {
        let text = format!("{}.{}.{}.{}/{prefix}", a[0], a[1], a[2], a[3]);
        prop_assert_eq!(parse_cidr(&text).is_ok(), prefix <= 32);
    }
}

/// Alias bombs and deep nesting in `proxy.istio.io/config` fail fast instead of exhausting memory.
#[test]
fn proxy_config_resists_yaml_bombs() {
    let mut bomb = String::from("a: &a [x,x,x,x,x,x,x,x,x]\n");
    for i in 0..9u8 {
        let prev = (b'a' + i) as char;
        let next = (b'a' + i + 1) as char;
        bomb.push_str(&format!("{next}: &{next} [*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev},*{prev}]\n"));
    }
    let start = std::time::Instant::now();
    let result = parse_proxy_config(&bomb);
    assert!(
        start.elapsed() < std::time::Duration::from_secs(2),
        "took {:?}",
        start.elapsed()
    );
    assert!(
        result.is_err(),
        "a 9^10-element alias expansion must be refused"
    );
    let deep = "[".repeat(10_000);
    assert!(parse_proxy_config(&deep).is_err());
    let deep_json = format!("{{\"a\":{}", "[".repeat(10_000));
    assert!(parse_proxy_config(&deep_json).is_err());
}
