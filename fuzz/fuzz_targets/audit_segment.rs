//! Audit segment recovery and the segment reader on hostile or damaged bytes.
//!
//! The target writes segment files into a fresh directory (on /dev/shm when
//! present) and opens them as the log does at start-up. The format is
//! re-implemented here from the documentation of `src/audit/segment.rs`, so
//! a drift between the two shows up as a failed invariant.
//!
//! Mode 0, raw: up to three segment files of arbitrary bytes. Recovery may
//! refuse; when it accepts, every record read back hashes to the leaf the
//! rebuilt tree holds.
//!
//! Mode 1, damage: a valid log of 1 to 24 records in one or two segments,
//! then byte flips and an optional truncation chosen by the input, and a
//! published tree size. Recovery may refuse; when it accepts it must never
//! hand back a record that differs from what was written (a corrupted record
//! accepted as valid), never keep fewer records than a published tree head
//! covers, and keep every record when nothing was damaged.
#![no_main]

use std::path::{Path, PathBuf};

use libfuzzer_sys::fuzz_target;
use mconnect::audit::fuzz_recover_and_read;
use mconnect::audit::merkle::leaf_hash;

fn scratch() -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("mconnect-fuzz-audit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

fn header(base: u64) -> Vec<u8> {
    let mut out = b"MCAUDSG1".to_vec();
    out.extend_from_slice(&base.to_le_bytes());
    let crc = crc32c::crc32c(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

fn frame(out: &mut Vec<u8>, seq: u64, leaf: &[u8]) {
    let len = (leaf.len() as u32).to_le_bytes();
    let seq = seq.to_le_bytes();
    let crc = crc32c::crc32c_append(crc32c::crc32c_append(crc32c::crc32c(&len), &seq), leaf);
    out.extend_from_slice(&len);
    out.extend_from_slice(&crc.to_le_bytes());
    out.extend_from_slice(&seq);
    out.extend_from_slice(leaf);
}

fn name(base: u64) -> String {
    format!("{base:020}.seg")
}

fn leaf(seq: u64) -> Vec<u8> {
    // Records of varied length, like canonical JSON audit records.
    format!(
        r#"{{"seq":{seq},"pad":"{}"}}"#,
        "x".repeat((seq as usize * 7) % 40)
    )
    .into_bytes()
}

fn raw(dir: &Path, data: &[u8]) {
    let [signed, rest @ ..] = data else { return };
    for (i, chunk) in rest.split(|b| *b == 0xff).take(3).enumerate() {
        // Name the file after the base its header claims, so that recovery
        // gets past the name check and into the frames.
        let base = chunk.get(8..16).map_or(i as u64, |b| {
            u64::from_le_bytes(b.try_into().unwrap_or_default()) % 64
        });
        let _ = std::fs::write(dir.join(name(base)), chunk);
    }
    let _ = fuzz_recover_and_read(dir, u64::from(*signed % 8), |seq, hash, leaf| {
        assert_eq!(
            hash,
            Some(leaf_hash(leaf)),
            "record {seq} read back differs from the tree"
        );
    });
}

fn damage(dir: &Path, data: &[u8]) {
    let [count, split, signed, cut, flips @ ..] = data else {
        return;
    };
    let count = u64::from(*count % 24) + 1;
    let split = u64::from(*split) % (count + 1);
    let signed = u64::from(*signed) % (count + 1);
    let mut files: Vec<(u64, Vec<u8>)> = Vec::new();
    let bounds = if split == 0 || split == count {
        vec![(0, count)]
    } else {
        vec![(0, split), (split, count)]
    };
    for (base, end) in bounds {
        let mut bytes = header(base);
        for seq in base..end {
            frame(&mut bytes, seq, &leaf(seq));
        }
        files.push((base, bytes));
    }
    let mut damaged = false;
    for flip in flips.chunks_exact(3) {
        let file = flip[0] as usize % files.len();
        let pos = usize::from(flip[0] >> 1) << 8 | usize::from(flip[1]);
        let bytes = &mut files[file].1;
        if flip[2] != 0 {
            let at = pos % bytes.len();
            bytes[at] ^= flip[2];
            damaged = true;
        }
    }
    if *cut != 0 {
        let last = &mut files.last_mut().expect("one file at least").1;
        let keep = last.len() - (*cut as usize % last.len().max(1));
        damaged |= keep != last.len();
        last.truncate(keep);
    }
    for (base, bytes) in &files {
        std::fs::write(dir.join(name(*base)), bytes).expect("write segment");
    }
    let result = fuzz_recover_and_read(dir, signed, |seq, hash, read| {
        assert_eq!(
            hash,
            Some(leaf_hash(read)),
            "record {seq} read back differs from the tree"
        );
        assert_eq!(
            read,
            leaf(seq),
            "record {seq} was damaged and accepted as valid"
        );
    });
    match result {
        Ok(size) => {
            assert!(size <= count, "recovered {size} records of {count} written");
            assert!(
                size >= signed,
                "recovered {size} records, a tree head covers {signed}"
            );
            if !damaged {
                assert_eq!(size, count, "an undamaged log lost records");
            }
        }
        Err(e) => assert!(damaged, "an undamaged log was refused: {e}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let dir = scratch();
    match data.split_first() {
        Some((mode, rest)) if mode % 2 == 0 => raw(&dir, rest),
        Some((_, rest)) => damage(&dir, rest),
        None => {}
    }
    let _ = std::fs::remove_dir_all(&dir);
});
