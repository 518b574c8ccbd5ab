//! Passes nginx's feature and version flags on to the module's code, and
//! records where the nginx build tree is, so the Makefile and the tests can
//! find the nginx binary the module was built against.

use std::env;
use std::fs;
use std::path::PathBuf;

fn main() {
    // Flags detected by nginx-sys (a direct dependency, so its DEP_NGINX_*
    // metadata reaches us).
    println!("cargo::rerun-if-env-changed=DEP_NGINX_FEATURES");
    println!("cargo::rerun-if-env-changed=DEP_NGINX_FEATURES_CHECK");
    println!(
        "cargo::rustc-check-cfg=cfg(ngx_feature, values({}))",
        env::var("DEP_NGINX_FEATURES_CHECK").unwrap_or("any()".to_string())
    );
    if let Ok(features) = env::var("DEP_NGINX_FEATURES") {
        for feature in features.split(',').map(str::trim).filter(|f| !f.is_empty()) {
            println!("cargo::rustc-cfg=ngx_feature=\"{feature}\"");
        }
    }

    // Version gates: APIs that differ between the nginx releases we support
    // (Debian bookworm's 1.22 and the vendored 1.28).
    // `ngx_1_N` is set when nginx >= 1.N.0, for every N in VERSION_GATES
    // (e.g. `#[cfg(ngx_1_23)]`: `ngx_table_elt_t.next`, added in 1.23.0).
    const VERSION_GATES: &[u64] = &[23, 25, 27];
    for minor in VERSION_GATES {
        println!("cargo::rustc-check-cfg=cfg(ngx_1_{minor})");
    }
    println!("cargo::rerun-if-env-changed=DEP_NGINX_VERSION_NUMBER");
    if let Ok(version) = env::var("DEP_NGINX_VERSION_NUMBER") {
        let version: u64 = version.parse().unwrap_or(0);
        for minor in VERSION_GATES {
            if version >= 1_000_000 + minor * 1_000 {
                println!("cargo::rustc-cfg=ngx_1_{minor}");
            }
        }
    }

    // Patch-level gates of the sticky module: nginx 1.29.6 and later have
    // a `sticky` directive of their own (then the module registers only
    // `sync_sticky`); 1.27.3 added reference counts and a configuration
    // generation to round-robin peers (`ngx_rr_peer_refs`).
    println!("cargo::rustc-check-cfg=cfg(ngx_core_sticky)");
    println!("cargo::rustc-check-cfg=cfg(ngx_rr_peer_refs)");
    if let Ok(version) = env::var("DEP_NGINX_VERSION_NUMBER") {
        let version: u64 = version.parse().unwrap_or(0);
        if version >= 1_029_006 {
            println!("cargo::rustc-cfg=ngx_core_sticky");
        }
        if version >= 1_027_003 {
            println!("cargo::rustc-cfg=ngx_rr_peer_refs");
        }
    }

    // target/<profile>/nginx-build-dir names the configured nginx tree.
    println!("cargo::rerun-if-env-changed=DEP_NGINX_BUILD_DIR");
    if let (Ok(build_dir), Ok(out_dir)) = (env::var("DEP_NGINX_BUILD_DIR"), env::var("OUT_DIR")) {
        let profile_dir = PathBuf::from(out_dir).join("../../..");
        let _ = fs::write(
            profile_dir.join("nginx-build-dir"),
            format!("{build_dir}\n"),
        );
    }
}
