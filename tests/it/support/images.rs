//! Test images: digests, incompressible bytes, tar layers, OCI layouts and docker archives.

use std::path::Path;

pub fn sha256_hex(data: &[u8]) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, data);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Incompressible bytes.
pub fn random_bytes(n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    aws_lc_rs::rand::SecureRandom::fill(&aws_lc_rs::rand::SystemRandom::new(), &mut v).unwrap();
    v
}

/// A tar archive (ustar) of the given files, as an image layer.
pub fn tar(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, data) in files {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..108].copy_from_slice(b"0000644\0");
        h[108..116].copy_from_slice(b"0000000\0");
        h[116..124].copy_from_slice(b"0000000\0");
        h[124..136].copy_from_slice(format!("{:011o}\0", data.len()).as_bytes());
        h[136..148].copy_from_slice(b"00000000000\0");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|b| u32::from(*b)).sum();
        h[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

/// An OCI image layout on disk with the given layers; returns the manifest digest and every
/// blob digest (config and layers).
pub fn oci_layout(dir: &Path, tag: &str, layers: &[Vec<u8>]) -> (String, Vec<String>) {
    let blobs = dir.join("blobs/sha256");
    std::fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| {
        let hex = sha256_hex(data);
        std::fs::write(blobs.join(&hex), data).unwrap();
        format!("sha256:{hex}")
    };
    let layer_digests: Vec<String> = layers.iter().map(|l| put(l)).collect();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": layer_digests},
    })
    .to_string();
    let config_digest = put(config.as_bytes());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
        "layers": layers.iter().zip(&layer_digests).map(|(l, d)| serde_json::json!({
            "mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": l.len()
        })).collect::<Vec<_>>(),
    })
    .to_string();
    let manifest_digest = put(manifest.as_bytes());
    std::fs::write(dir.join("oci-layout"), r#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    std::fs::write(
        dir.join("index.json"),
        serde_json::json!({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest, "size": manifest.len(),
                "annotations": {"org.opencontainers.image.ref.name": tag}
            }]
        })
        .to_string(),
    )
    .unwrap();
    let mut all = vec![config_digest];
    all.extend(layer_digests);
    (manifest_digest, all)
}

/// A `docker save` archive (manifest.json, the config, one folder per layer) of an image with
/// the given uncompressed layer tars, tagged `tag`; returns the archive and the image ID
/// (`sha256:` of the config).
pub fn docker_archive(tag: &str, layers: &[Vec<u8>]) -> (Vec<u8>, String) {
    let diff_ids: Vec<String> = layers.iter().map(|l| sha256_hex(l)).collect();
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {
            "type": "layers",
            "diff_ids": diff_ids.iter().map(|h| format!("sha256:{h}")).collect::<Vec<_>>(),
        },
        "history": layers.iter().map(|_| serde_json::json!({"created_by": "registry-gate test"})).collect::<Vec<_>>(),
    })
    .to_string();
    let config_hex = sha256_hex(config.as_bytes());
    let config_name = format!("{config_hex}.json");
    let layer_names: Vec<String> = diff_ids.iter().map(|h| format!("{h}/layer.tar")).collect();
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": [tag],
        "Layers": layer_names,
    }])
    .to_string();
    let mut files: Vec<(&str, &[u8])> = vec![
        ("manifest.json", manifest.as_bytes()),
        (&config_name, config.as_bytes()),
    ];
    for (name, data) in layer_names.iter().zip(layers) {
        files.push((name, data));
    }
    (tar(&files), format!("sha256:{config_hex}"))
}
