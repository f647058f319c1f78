//! The default pool leaves out the kernel's ephemeral range as read at run
//! time. Run as root in a private network namespace whose
//! `ip_local_port_range` is narrowed to 15000–25000 (the setting is per
//! namespace), reserve enough keys to pass the range and check none falls in it.

mod util;

use std::process::Command;

use util::{TestEnv, is_root, porthold_bin};

#[test]
fn no_port_inside_the_ephemeral_range_is_handed_out() {
    if !is_root() {
        porthold::test_hooks::skip("needs root for `unshare -n` (CI runs as root)");
        return;
    }
    if Command::new("unshare")
        .args(["-n", "true"])
        .status()
        .map(|s| !s.success())
        .unwrap_or(true)
    {
        porthold::test_hooks::skip("`unshare -n` is not available here");
        return;
    }
    let env = TestEnv::new();
    let ports_file = env.dir.path().join("ports.txt");
    // 10000-14999 holds 5,000 ports; 12 more must skip 15000-25000 entirely.
    let script = format!(
        r#"set -e
echo "15000 25000" > /proc/sys/net/ipv4/ip_local_port_range
ip link set lo up 2>/dev/null || true
i=0
while [ $i -lt 5012 ]; do
  "{bin}" reserve --skip-occupancy-check --allow-unrelated-path --path /netns/$i
  i=$((i+1))
done > "{out}"
"#,
        bin = porthold_bin().display(),
        out = ports_file.display()
    );
    let status = Command::new("unshare")
        .args(["-n", "sh", "-c", &script])
        .env("PORTHOLD_DATA_DIR", env.data_dir())
        .env_remove("PORTHOLD_POOL")
        .status()
        .unwrap();
    assert!(status.success());
    let ports: Vec<u16> = std::fs::read_to_string(&ports_file)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(ports.len(), 5012);
    let inside: Vec<_> = ports
        .iter()
        .filter(|p| (15000..=25000).contains(*p))
        .collect();
    assert!(inside.is_empty(), "handed out ephemeral ports: {inside:?}");
    assert_eq!(ports[4999], 14999);
    assert_eq!(&ports[5000..], &(25001..=25012).collect::<Vec<u16>>()[..]);
}
