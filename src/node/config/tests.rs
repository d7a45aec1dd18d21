//! Config parsing, defaults and validation, through `Config::parse`.

use serde::Deserializer;

use super::*;

const MINIMAL: &str = r#"
data_dir = "d"
metadata_dir = "m"
ca_cert = "ca.crt"
node_cert = "n.crt"
node_key = "n.key"
admin_token_file = "t"
"#;

#[test]
fn the_readme_example_parses() {
    let c = Config::parse(EXAMPLE_CONFIG, "example").unwrap();
    assert_eq!(c.replication_factor, 3);
    assert_eq!(c.effective_write_quorum(), 2);
    assert_eq!(c.members.len(), 3);
    assert_eq!(c.max_block_size, 16 << 20);
    assert_eq!(c.scrub_interval, Duration::from_secs(30 * 86400));
}

#[test]
fn the_old_need_block_timeout_key_still_sets_the_peer_rpc_timeout() {
    let old = Config::parse(&format!("{MINIMAL}\nneed_block_timeout = \"7s\"\n"), "t").unwrap();
    assert_eq!(old.peer_rpc_timeout, Duration::from_secs(7));
    let new = Config::parse(&format!("{MINIMAL}\npeer_rpc_timeout = \"8s\"\n"), "t").unwrap();
    assert_eq!(new.peer_rpc_timeout, Duration::from_secs(8));
}

#[test]
fn defaults_fill_missing_keys() {
    let c = Config::parse(MINIMAL, "t").unwrap();
    assert_eq!(c.gc_delay, Duration::from_secs(600));
    assert_eq!(c.compression_level, Some(1));
    assert!(c.data_fsync);
    assert_eq!(c.effective_write_quorum(), 1);
    assert_eq!(c.http_listen.to_string(), DEFAULT_HTTP_LISTEN);
}

#[test]
fn data_dirs_parse_and_data_dir_is_one_entry_but_not_both() {
    let rest = MINIMAL.replace("data_dir = \"d\"\n", "");
    let c = Config::parse(
        &format!("data_dirs = [{{ path = \"a\", capacity = \"4TB\" }}, {{ path = \"b\", capacity = \"1TiB\", read_only = true }}]\n{rest}"),
        "t",
    )
    .unwrap();
    let dirs = c.storage_dirs();
    assert_eq!(dirs.len(), 2);
    assert_eq!(dirs[0].capacity, Some(4_000_000_000_000));
    assert_eq!((dirs[1].capacity, dirs[1].read_only), (Some(1 << 40), true));
    let one = Config::parse(&format!("{MINIMAL}data_dir_capacity = \"1GB\"\n"), "t").unwrap();
    assert_eq!(one.storage_dirs()[0].path, PathBuf::from("d"));
    assert_eq!(one.storage_dirs()[0].capacity, Some(1_000_000_000));
    let both = Config::parse(
        &format!("{MINIMAL}data_dirs = [{{ path = \"a\", capacity = \"1TB\" }}]\n"),
        "t",
    )
    .unwrap_err();
    assert!(
        format!("{both:#}").contains("data_dir and data_dirs are both set"),
        "{both:#}"
    );
    let none = Config::parse(&rest, "t").unwrap_err();
    assert!(
        format!("{none:#}").contains("missing data_dir or data_dirs"),
        "{none:#}"
    );
    for bad in [
        "data_dirs = [{ path = \"a\" }]",
        "data_dirs = [{ path = \"a\", capacity = \"1TB\", size = 1 }]",
        "data_dirs = [{ path = \"a\", capacity = \"1TB\" }, { path = \"a\", capacity = \"1TB\" }]",
        "data_dirs = [{ path = \"a\", capacity = \"1TB\", read_only = true }]",
    ] {
        assert!(
            Config::parse(&format!("{bad}\n{rest}"), "t").is_err(),
            "{bad} should be refused"
        );
    }
}

#[test]
fn unknown_keys_are_refused_by_name() {
    let e = Config::parse(&format!("{MINIMAL}\ngc_dealy = \"1m\"\n"), "t").unwrap_err();
    assert!(format!("{e:#}").contains("gc_dealy"), "{e:#}");
}

#[test]
fn durations_sizes_and_levels_are_human_readable_and_checked() {
    let c = Config::parse(
        &format!("{MINIMAL}\ngc_delay = \"1h 30m\"\nmax_block_size = \"1MiB\"\ncompression_level = \"none\"\n"),
        "t",
    )
    .unwrap();
    assert_eq!(c.gc_delay, Duration::from_secs(5400));
    assert_eq!(c.max_block_size, 1 << 20);
    assert_eq!(c.compression_level, None);
    for bad in [
        "gc_delay = \"soon\"",
        "max_block_size = \"big\"",
        "compression_level = 30",
        "max_block_size = \"1GiB\"",
    ] {
        assert!(
            Config::parse(&format!("{MINIMAL}\n{bad}\n"), "t").is_err(),
            "{bad} should be refused"
        );
    }
}

#[test]
fn inconsistent_replication_settings_are_refused() {
    for bad in [
        "replication_factor = 2",
        "replication_factor = 0",
        "write_quorum = 2",
    ] {
        let e = Config::parse(&format!("{MINIMAL}\n{bad}\n"), "t").unwrap_err();
        assert!(
            format!("{e:#}").contains("replication_factor")
                || format!("{e:#}").contains("write_quorum"),
            "{e:#}"
        );
    }
    let e = Config::parse(
        &format!("{MINIMAL}\n[[members]]\nid = \"xyz\"\naddr = \"127.0.0.1:1\"\n"),
        "t",
    )
    .unwrap_err();
    assert!(format!("{e:#}").contains("invalid id"), "{e:#}");
}

/// The field names serde knows for `T`, read from the list its derive hands to
/// `deserialize_struct`, so the check below cannot drift from the struct.
fn serde_fields<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    struct Capture<'a>(&'a mut &'static [&'static str]);
    impl<'de> Deserializer<'de> for Capture<'_> {
        type Error = serde::de::value::Error;
        fn deserialize_any<V: serde::de::Visitor<'de>>(
            self,
            _: V,
        ) -> Result<V::Value, Self::Error> {
            Err(serde::de::Error::custom("not a struct"))
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(serde::de::Error::custom("captured"))
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = T::deserialize(Capture(&mut fields));
    fields
}

#[test]
fn every_config_key_is_in_the_operations_reference() {
    let readme = include_str!("../../../docs/operations.md");
    let start = readme
        .find("## Configuration reference")
        .expect("docs/operations.md has a configuration reference");
    let reference = &readme[start..];
    let reference = &reference[..reference[3..]
        .find("\n## ")
        .map_or(reference.len(), |i| i + 3)];
    let config_fields = serde_fields::<Config>();
    let member_fields = serde_fields::<Member>();
    assert!(
        config_fields.len() > 20 && member_fields.len() == 4,
        "field capture failed"
    );
    for key in config_fields.iter().chain(member_fields) {
        assert!(
            reference.contains(&format!("`{key}`")) || reference.contains(&format!("`[[{key}]]`")),
            "config key `{key}` is missing from docs/operations.md's configuration reference"
        );
    }
}

#[test]
fn embedded_default_is_valid() {
    Config::embedded_default().validate().unwrap();
}

#[test]
fn embedded_under_a_dir_keeps_every_file_there() {
    let base = Path::new("/tmp/elsewhere");
    let cfg = Config::embedded_under(base);
    cfg.validate().expect("valid");
    let paths = [
        cfg.data_dir.clone().expect("one data dir"),
        cfg.metadata_dir.clone(),
        cfg.ca_cert.clone(),
        cfg.node_cert.clone(),
        cfg.node_key.clone(),
        cfg.admin_token_file.clone(),
    ];
    for p in paths {
        assert!(
            p.starts_with(base),
            "{} is outside {}",
            p.display(),
            base.display()
        );
    }
    let default = Config::embedded_default();
    assert_eq!(
        default.metadata_dir,
        Path::new(DEFAULT_BASE_DIR).join("meta")
    );
}
