//! Checks a deploy makes before it touches the grid's stack. With `grid.ami: image` the grid
//! and its manager boot the image `make image` built for this version of batchgrid; when it is
//! not there, CloudFormation would fail half-way (the manager's `resolve:ssm` finds no
//! parameter) or, worse, boot an image whose binary does not match the template. So the
//! image stack's outputs are read first, and the deploy stops with one line naming the fix.

use crate::deploy::{DeployError, Deployer};
use crate::environment::{Environment, IMAGE_AMI};
use crate::image::image_stack_name;

/// What a preflight found wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PreflightError {
    /// The image of this version does not exist (yet).
    #[error("no image of batchgrid {version} for {name}: stack {stack} {reason}; run `make image ENV={name}` first")]
    NoImage {
        /// The environment.
        name: String,
        /// The version the deploy needs.
        version: String,
        /// The image stack.
        stack: String,
        /// What was found instead.
        reason: String,
    },
    /// CloudFormation could not be asked.
    #[error(transparent)]
    Deploy(#[from] DeployError),
}

/// The image a deploy will run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageFound {
    /// The image stack.
    pub stack: String,
    /// The AMI id.
    pub image_id: String,
    /// The git revision of the binary it carries, when the stack records it.
    pub revision: Option<String>,
}

/// With `grid.ami: image`, checks that environment `name`'s image stack holds a finished image
/// of batchgrid `version`, and returns it; `None` for a fixed AMI id (nothing to check).
pub async fn check_image(
    deployer: &Deployer,
    name: &str,
    env: &Environment,
    version: &str,
) -> Result<Option<ImageFound>, PreflightError> {
    if env.grid.ami != IMAGE_AMI {
        return Ok(None);
    }
    let stack = image_stack_name(name, env);
    let missing = |reason: String| PreflightError::NoImage {
        name: name.to_owned(),
        version: version.to_owned(),
        stack: stack.clone(),
        reason,
    };
    let Some(status) = deployer.status(&stack).await? else {
        return Err(missing("does not exist".into()));
    };
    let status = status.as_str();
    if status.ends_with("_IN_PROGRESS") {
        return Err(missing(format!("is {status} (wait for the image build to finish)")));
    }
    let outputs = match deployer.outputs(&stack).await {
        Ok(outputs) => outputs,
        Err(DeployError::NoStack(_)) => return Err(missing("does not exist".into())),
        Err(error) => return Err(error.into()),
    };
    let Some(image_id) = outputs.get("ImageId") else {
        return Err(missing(format!("is {status} with no image in it")));
    };
    match outputs.get("ImageVersion") {
        Some(built) if built == version => Ok(Some(ImageFound {
            stack: stack.clone(),
            image_id: image_id.clone(),
            revision: outputs.get("ImageRevision").cloned(),
        })),
        Some(built) => Err(missing(format!("holds the image of batchgrid {built} ({image_id})"))),
        None => Err(missing(format!("holds an image of an unrecorded version ({image_id})"))),
    }
}

#[cfg(test)]
mod tests;
