//! Getting a guest image into memory and its vCPUs into their entry state:
//! kernel-less ELFs (`kernelless`, entered at CPL3) and, in `linux`, Linux
//! kernels. Which one an image is: [`kernelless::is_kernelless`] (the ELF's
//! `EMBER` note), unless forced by `--kernelless`.

pub mod cpl3;
pub mod elf;
pub mod kernelless;
pub mod linux;
