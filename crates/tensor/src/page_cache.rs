//! Dropping a file's clean pages from the kernel's page cache (`posix_fadvise(DONTNEED)`), so a
//! read that follows comes from the disk. Used to measure cold reads without root (no
//! `drop_caches`) and without disturbing other files' cached pages.

/// Asks the kernel to drop `file`'s clean cached pages. Pages still mapped by a process, and
/// dirty pages not yet written back, stay; so does everything on platforms without
/// `posix_fadvise` (there this returns `Unsupported`).
pub fn evict_page_cache(file: &std::fs::File) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is valid for the call (borrowed from a live `File`), and
        // POSIX_FADV_DONTNEED is only advice: it never changes the file's contents.
        let rc = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if rc == 0 {
            Ok(())
        } else {
            // posix_fadvise returns the error number instead of setting errno.
            Err(std::io::Error::from_raw_os_error(rc))
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = file;
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "posix_fadvise is not available on this platform",
        ))
    }
}

/// The virtual memory page size: what `madvise` ranges are made of.
#[cfg_attr(not(unix), allow(dead_code))]
pub(crate) fn page_size() -> usize {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: sysconf only reads a system constant.
        let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if size > 0 {
            return size as usize;
        }
    }
    // Elsewhere a multiple of the usual sizes (4 KiB on x86, 16 KiB on Apple silicon), so the
    // ranges rounded to it are whole pages.
    16 << 10
}

#[cfg(test)]
mod tests {
    #[test]
    fn eviction_succeeds_on_linux() {
        let path = std::env::temp_dir().join(format!("nano-infer-evict-{}", std::process::id()));
        std::fs::write(&path, vec![7u8; 1 << 16]).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let result = super::evict_page_cache(&file);
        assert_eq!(result.is_ok(), cfg!(target_os = "linux"), "{result:?}");
        // Advice never changes the contents.
        assert_eq!(std::fs::read(&path).unwrap(), vec![7u8; 1 << 16]);
        std::fs::remove_file(&path).unwrap();
    }
}
