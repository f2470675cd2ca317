//! Arguments of `istio-iptables` in the `istio-init` container, in Istio's exact order.

use super::settings::Settings;
use crate::config::InjectorConfig;

/// Envoy's Prometheus port and the health port, always excluded from inbound capture.
const ALWAYS_EXCLUDED_INBOUND: &str = "15090,15021";

/// The proxy's uid, exempt from capture (`-u`).
pub const PROXY_UID: i64 = 1337;

/// `-d`: the fixed ports, the user's ports, then the status port if not already listed.
pub fn exclude_inbound_ports(user: &str, status_port: u16) -> String {
    let mut out = String::from(ALWAYS_EXCLUDED_INBOUND);
    let status = status_port.to_string();
    let mut status_listed = status_port == 0;
    for port in user.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        out.push(',');
        out.push_str(port);
        status_listed |= port == status;
    }
    if !status_listed {
        out.push(',');
        out.push_str(&status);
    }
    out
}

/// Trims blanks around list entries (`"80, 443"` -> `"80,443"`); the values were validated.
fn normalize_list(value: &str) -> String {
    if !value.contains(',') {
        return value.trim().to_string();
    }
    let mut out = String::with_capacity(value.len());
    for (i, item) in value.split(',').map(str::trim).enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(item);
    }
    out
}

/// Builds the argument list of `istio-init`.
pub fn args(settings: &Settings<'_>, config: &InjectorConfig) -> Vec<String> {
    let mut a: Vec<String> = Vec::with_capacity(24);
    let mut push = |flag: &str, value: &str| {
        a.push(flag.to_string());
        a.push(normalize_list(value));
    };
    push("-p", &config.mesh.proxy_listen_port.to_string());
    push("-z", &config.mesh.proxy_inbound_listen_port.to_string());
    push("-u", &PROXY_UID.to_string());
    push("-m", settings.interception_mode.as_str());
    push("-i", settings.include_ip_ranges);
    push("-x", settings.exclude_ip_ranges);
    push("-b", settings.include_inbound_ports);
    push(
        "-d",
        &exclude_inbound_ports(settings.exclude_inbound_ports, settings.status_port),
    );
    if let Some(q) = settings.include_outbound_ports {
        push("-q", q);
    }
    if let Some(o) = settings.exclude_outbound_ports {
        push("-o", o);
    }
    if let Some(k) = settings.reroute_interfaces {
        push("-k", k);
    }
    if let Some(c) = settings.exclude_interfaces {
        push("-c", c);
    }
    let mut out = Vec::with_capacity(a.len() + 2);
    out.push("istio-iptables".to_string());
    out.append(&mut a);
    out.push(format!("--log_output_level={}", settings.agent_log_level));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclude_inbound_appends_status_port_once() {
        assert_eq!(exclude_inbound_ports("", 15020), "15090,15021,15020");
        assert_eq!(
            exclude_inbound_ports("5432", 15020),
            "15090,15021,5432,15020"
        );
        assert_eq!(
            exclude_inbound_ports("15020, 80", 15020),
            "15090,15021,15020,80"
        );
        assert_eq!(exclude_inbound_ports("5432", 0), "15090,15021,5432");
    }

    #[test]
    fn lists_are_normalized() {
        assert_eq!(
            normalize_list(" 10.0.0.0/8 , fd00::/8"),
            "10.0.0.0/8,fd00::/8"
        );
        assert_eq!(normalize_list("*"), "*");
        assert_eq!(normalize_list(""), "");
    }
}
