//! Apache httpd: leaf, key and chain as separate files; commands only when configured.

use super::{Target, cert_file, key_file, key_text};
use crate::{ApacheTarget, Bundle, Common, DeployError, PlannedFile};

impl Target for ApacheTarget {
    fn common(&self) -> Common<'_> {
        ApacheTarget::common(self)
    }

    fn plan(&self, bundle: &Bundle) -> Result<Vec<PlannedFile>, DeployError> {
        let common = ApacheTarget::common(self);
        Ok(vec![
            cert_file(&self.cert_path, bundle.leaf_pem()?, &common),
            key_file(&self.key_path, key_text(bundle).into_bytes(), &common),
            cert_file(&self.chain_path, bundle.intermediates_pem()?, &common),
        ])
    }
}
