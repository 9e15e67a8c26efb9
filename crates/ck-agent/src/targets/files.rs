//! Plain PEM files in the layouts most software accepts.

use super::{Target, cert_file, full_chain, key_file, key_text};
use crate::{Bundle, Common, DeployError, FilesTarget, PlannedFile};

impl Target for FilesTarget {
    fn common(&self) -> Common<'_> {
        FilesTarget::common(self)
    }

    fn plan(&self, bundle: &Bundle) -> Result<Vec<PlannedFile>, DeployError> {
        let common = FilesTarget::common(self);
        let mut files = vec![
            cert_file(&self.cert_path, bundle.leaf_pem()?, &common),
            key_file(&self.key_path, key_text(bundle).into_bytes(), &common),
        ];
        if let Some(path) = &self.chain_path {
            files.push(cert_file(path, bundle.intermediates_pem()?, &common));
        }
        if let Some(path) = &self.fullchain_path {
            files.push(cert_file(path, full_chain(bundle)?, &common));
        }
        if let Some(path) = &self.combined_path {
            let combined = format!("{}{}", full_chain(bundle)?, key_text(bundle));
            files.push(key_file(path, combined.into_bytes(), &common));
        }
        Ok(files)
    }
}
