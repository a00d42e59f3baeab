//! Writes decrypted packets to the TUN. Each packet is decrypted into `slot()` (right
//! behind room for a `virtio_net_hdr`) and written with a zeroed header: the checksums
//! are already complete, since the sender's kernel (or our segmentation) finished them.

use super::offload::VNET_HDR_LEN;
use super::tun::Tun;

const BUF: usize = VNET_HDR_LEN + 65536 + 256;

pub(crate) struct Coalescer {
    vnet: bool,
    buf: Vec<u8>,
}

impl Coalescer {
    pub fn new(vnet: bool) -> Self {
        Coalescer {
            vnet,
            buf: vec![0u8; BUF],
        }
    }

    /// Where to decrypt the next packet.
    pub fn slot(&mut self) -> &mut [u8] {
        &mut self.buf[VNET_HDR_LEN..]
    }

    /// The packet in `slot()[..len]` is ready.
    pub fn commit(&mut self, len: usize, tun: &Tun) {
        let r = if self.vnet {
            self.buf[..VNET_HDR_LEN].fill(0);
            tun.write(&self.buf[..VNET_HDR_LEN + len])
        } else {
            tun.write(&self.buf[VNET_HDR_LEN..VNET_HDR_LEN + len])
        };
        if let Err(e) = r {
            tracing::trace!(error = %e, "TUN write failed");
        }
    }

    /// Writes anything held back.
    pub fn flush(&mut self, _tun: &Tun) {}
}
