//! virtio devices and their MMIO transport.
//! Owner of this folder: the virtio work (issue 3). Placeholder until it lands.
