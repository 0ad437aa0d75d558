//! The virtual machine monitor layer (KubeVirt's virt-launcher, on one host): a VM run's runtime
//! directory, the QEMU command line, our own QMP client, starting/stopping/adopting QEMU and swtpm as
//! their parent.
