//! `--gzip SHARE` and `--deflate SHARE`: a share of the replies sent with `Content-Encoding:
//! gzip` (RFC 1952) or `deflate` (the zlib format of RFC 1950, as RFC 9110 8.4.1.2 defines it),
//! whatever the request's `Accept-Encoding` says, so the splitter's decoding of backend replies
//! can be exercised and measured.
//!
//! Compression is at level 1, nginx's default `gzip_comp_level`, and each connection keeps its
//! compressors and reuses them (a fresh zlib state is a few hundred KiB to set up), so the mock
//! stays cheap next to the splitter it loads.

use flate2::{Compress, Compression, FlushCompress, Status};

/// How one reply's body is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Encoding {
    Identity,
    Gzip,
    Deflate,
}

impl Encoding {
    /// The `Content-Encoding` header line, if any.
    pub(super) fn header(self) -> Option<&'static [u8]> {
        match self {
            Encoding::Identity => None,
            Encoding::Gzip => Some(b"Content-Encoding: gzip\r\n"),
            Encoding::Deflate => Some(b"Content-Encoding: deflate\r\n"),
        }
    }
}

/// The shares of replies compressed each way (validated: each in 0..=1, together at most 1).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(super) struct Shares {
    pub(super) gzip: f64,
    pub(super) deflate: f64,
}

impl Shares {
    /// Checks the shares as given by hand-built arguments (clap checks each on the command line).
    pub(super) fn new(gzip: f64, deflate: f64) -> anyhow::Result<Shares> {
        let share = |v: f64| (0.0..=1.0).contains(&v);
        anyhow::ensure!(share(gzip), "--gzip: not in 0..=1");
        anyhow::ensure!(share(deflate), "--deflate: not in 0..=1");
        anyhow::ensure!(
            gzip + deflate <= 1.0 + 1e-9,
            "--gzip {gzip} and --deflate {deflate}: the shares add up to more than 1"
        );
        Ok(Shares { gzip, deflate })
    }

    /// Draws the encoding of one reply; no draw at all when both shares are 0.
    pub(super) fn pick(self) -> Encoding {
        if self.gzip <= 0.0 && self.deflate <= 0.0 {
            return Encoding::Identity;
        }
        let r = fastrand::f64();
        if r < self.gzip {
            Encoding::Gzip
        } else if r < self.gzip + self.deflate {
            Encoding::Deflate
        } else {
            Encoding::Identity
        }
    }
}

/// One connection's compressors, made on first use and reset between replies.
#[derive(Default)]
pub(super) struct Compressors {
    gzip: Option<Compress>,
    deflate: Option<Compress>,
}

impl std::fmt::Debug for Compressors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Compressors")
            .field("gzip", &self.gzip.is_some())
            .field("deflate", &self.deflate.is_some())
            .finish()
    }
}

impl Compressors {
    /// Compresses all of `input` as `enc` into `out` (cleared first). `Identity` copies.
    pub(super) fn compress(&mut self, enc: Encoding, input: &[u8], out: &mut Vec<u8>) {
        out.clear();
        let c = match enc {
            Encoding::Identity => return out.extend_from_slice(input),
            Encoding::Gzip => self
                .gzip
                .get_or_insert_with(|| Compress::new_gzip(Compression::fast(), 15)),
            Encoding::Deflate => self
                .deflate
                .get_or_insert_with(|| Compress::new(Compression::fast(), true)),
        };
        c.reset();
        // Deflate's worst case is a few bytes per 16 KiB block over the input, plus the header
        // and trailer: this is enough in one go; the loop only guards against a surprise.
        out.reserve(input.len() + input.len() / 1000 + 64);
        let start = c.total_in();
        loop {
            let fed = (c.total_in() - start) as usize;
            match c.compress_vec(&input[fed..], out, FlushCompress::Finish) {
                Ok(Status::StreamEnd) => return,
                Ok(Status::Ok | Status::BufError) => out.reserve(out.capacity().max(64)),
                // Only a misuse of the stream fails, and a fresh reset stream is never misused.
                Err(e) => unreachable!("compressing a reply: {e}"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read as _;

    fn inflate(enc: Encoding, data: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        match enc {
            Encoding::Gzip => flate2::read::GzDecoder::new(data).read_to_end(&mut out),
            Encoding::Deflate => flate2::read::ZlibDecoder::new(data).read_to_end(&mut out),
            Encoding::Identity => return data.to_vec(),
        }
        .expect("a valid stream");
        out
    }

    #[test]
    fn round_trips_and_reuse() {
        let mut c = Compressors::default();
        let mut out = Vec::new();
        let big: Vec<u8> = (0..200_000u32).map(|i| (i * 7 % 251) as u8).collect();
        for enc in [Encoding::Gzip, Encoding::Deflate, Encoding::Identity] {
            for input in [
                &b"{\"price\":1}"[..],
                b"",
                &big,
                b"again, on the reset stream",
            ] {
                c.compress(enc, input, &mut out);
                assert_eq!(inflate(enc, &out), input, "{enc:?}");
            }
        }
        c.compress(Encoding::Gzip, b"x", &mut out);
        assert_eq!(&out[..3], [0x1f, 0x8b, 8], "gzip magic and deflate method");
        c.compress(Encoding::Deflate, b"x", &mut out);
        assert_eq!(out[0] & 0x0f, 8, "zlib header: deflate method");
        assert_eq!(u16::from_be_bytes([out[0], out[1]]) % 31, 0, "zlib FCHECK");
    }

    #[test]
    fn shares_pick_and_validate() {
        let none = Shares::new(0.0, 0.0).unwrap();
        let all_gzip = Shares::new(1.0, 0.0).unwrap();
        let all_deflate = Shares::new(0.0, 1.0).unwrap();
        for _ in 0..200 {
            assert_eq!(none.pick(), Encoding::Identity);
            assert_eq!(all_gzip.pick(), Encoding::Gzip);
            assert_eq!(all_deflate.pick(), Encoding::Deflate);
        }
        let half = Shares::new(0.25, 0.25).unwrap();
        let picks: Vec<Encoding> = (0..2000).map(|_| half.pick()).collect();
        for enc in [Encoding::Identity, Encoding::Gzip, Encoding::Deflate] {
            let n = picks.iter().filter(|&&e| e == enc).count();
            assert!((200..1800).contains(&n), "{enc:?}: {n} of 2000");
        }
        assert!(Shares::new(0.6, 0.5).is_err());
        assert!(Shares::new(-0.1, 0.0).is_err());
        assert!(Shares::new(0.0, 1.5).is_err());
        assert!(Shares::new(0.5, 0.5).is_ok());
    }
}
