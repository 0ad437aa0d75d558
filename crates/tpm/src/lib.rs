//! The emulated TPM: running swtpm for a VM, manufacturing a persistent TPM with swtpm_setup and
//! a per-volume local CA (EK and platform certificates), and checking that a TPM state can be read
//! before a VM starts.
