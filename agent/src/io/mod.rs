//! I/O shell of the data plane (TUN device, UDP socket, event loop, `DataPlane` handle).
