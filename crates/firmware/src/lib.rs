//! UEFI firmware: QEMU firmware descriptors (/usr/share/qemu/firmware/*.json) and the choice of
//! firmware by the features a VM needs, and OVMF VARS files (checking their size and header, copying
//! templates, reading the variables) and writing them (`vars_write`: set and delete variables and
//! write a compacted store back, crash-safely), and Microsoft's 2023 Secure Boot certificates with
//! their enrollment (`microsoft_2023`).

pub mod descriptor;
pub mod microsoft_2023;
pub mod select;
pub mod vars;
pub mod vars_write;

pub use descriptor::{
    DEFAULT_SEARCH_DIRS, DescriptorError, Feature, FirmwareDescriptor, FlashFile, FlashMode,
    InterfaceType, LoadedDescriptors, Mapping, Target, load_descriptors, parse_descriptor,
};
pub use select::{
    Architecture, FirmwareChoice, FirmwareRequest, Refusal, SelectError, SelectedFirmware,
    select_firmware, select_uefi,
};
pub use vars::{
    EfiGuid, EfiVariable, PrepareError, StoreFormat, VarsError, VarsInfo, VarsProblem, check_vars,
    list_variables, prepare_vars,
};
pub use vars_write::{StoredVariable, VariableStore, VarsWriteError};
