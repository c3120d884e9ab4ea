//! Sizes as users write them, and the memory the system has available.

use crate::OffloadError;

/// Parses `3GiB`, `3G`, `512M`, `2.5g`, `1073741824` (bytes). Units are binary (K = 1024), as
/// `free -h` and llama.cpp's memory flags read them.
pub fn parse_size(text: &str) -> Result<u64, OffloadError> {
    let bad = || OffloadError::BadSize(text.to_owned());
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let value: f64 = number.parse().map_err(|_| bad())?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => return Err(bad()),
    };
    let bytes = value * (1u64 << shift) as f64;
    if !bytes.is_finite() || bytes < 0.0 || bytes > u64::MAX as f64 {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// `3.00 GiB`, `512.0 MiB`: for reports.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

/// Memory the system can give this process without swapping (`MemAvailable` on Linux);
/// `None` where that is not known.
pub fn available_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Bytes of `path` this process holds resident through its memory maps (the `Rss` of its
/// `/proc/self/smaps` entries naming the file; an unlinked file shows as `path (deleted)` and
/// counts too); `None` where that is not known. What a streamed layer's drop gives back shows
/// here, while the kernel's page cache may keep the pages.
pub fn mapped_resident_bytes(path: &std::path::Path) -> Option<u64> {
    let path = path.to_str()?;
    let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
    let mut total = 0;
    let mut in_path = false;
    for line in smaps.lines() {
        let mut fields = line.split_whitespace();
        let first = fields.next().unwrap_or("");
        if first.contains('-') && !first.ends_with(':') {
            // A mapping's header: `start-end perms offset dev inode [path]`.
            in_path = line.contains(path);
        } else if in_path && first == "Rss:" {
            total += fields.next()?.parse::<u64>().ok()? * 1024;
        }
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_never_mapped_holds_nothing() {
        let held = mapped_resident_bytes(std::path::Path::new("/nonexistent/nano-infer-file"));
        assert_eq!(held.is_some(), cfg!(target_os = "linux"));
        assert_eq!(held.unwrap_or(0), 0);
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("3GiB").unwrap(), 3 << 30);
        assert_eq!(parse_size("3g").unwrap(), 3 << 30);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(
            parse_size("2.5G").unwrap(),
            (2.5 * (1u64 << 30) as f64) as u64
        );
        assert_eq!(parse_size(" 1024 ").unwrap(), 1024);
        assert_eq!(parse_size("7 KiB").unwrap(), 7 << 10);
        for bad in ["", "G", "3X", "-1G", "1..2G", "abc"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sizes_format_readably() {
        assert_eq!(format_size(512), "512 B");
        assert_eq!(format_size(3 << 30), "3.00 GiB");
        assert_eq!(format_size(1536 << 10), "1.50 MiB");
    }

    #[test]
    fn meminfo_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(available_memory().unwrap() > 0);
        }
    }
}
