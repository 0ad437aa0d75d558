//! One module per subcommand.

pub mod run;
pub mod state;
pub mod serve;
pub mod validate;
