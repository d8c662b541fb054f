//! The object store on S3: one bucket, optionally under a key prefix.
//!
//! Uploads stream from disk; files above a threshold go up as a multipart upload with several
//! parts in flight (an aborted upload is cleaned up). Downloads stream to disk. The SDK retries
//! throttling and server errors with backoff.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, Delete, ObjectIdentifier};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use tokio::io::AsyncWriteExt;

use super::{validate_key, ListPage, ObjectMeta, ObjectReader, ObjectStore, StoreError};
use crate::aws::error_text;

/// Default size above which `put_file` uses a multipart upload.
pub const MULTIPART_THRESHOLD: u64 = 32 * 1024 * 1024;
/// Default part size (S3's minimum is 5 MiB; 10,000 parts at most, so this covers 160 GiB).
pub const PART_SIZE: u64 = 16 * 1024 * 1024;
/// Parts uploaded at once.
const PARTS_IN_FLIGHT: usize = 4;
/// Most keys S3 returns in one `ListObjectsV2` page.
const LIST_PAGE_MAX: usize = 1000;
/// Most keys in one `DeleteObjects` call.
const DELETE_BATCH: usize = 1000;

/// An S3 failure, as text with its causes.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct S3Failure(String);

/// An S3 bucket as an [`ObjectStore`].
#[derive(Debug, Clone)]
pub struct S3Store {
    client: aws_sdk_s3::Client,
    /// The same client without its interceptors, for presigning: a presigned request runs the
    /// interceptors up to its transmission, so the request meter would count a GET that this
    /// process never sends (the caller of the URL does).
    signer: aws_sdk_s3::Client,
    bucket: String,
    prefix: String,
    multipart_threshold: u64,
    part_size: u64,
}

impl S3Store {
    /// A store over `bucket`, keys under `prefix` (empty, or ending in `/`).
    pub fn new(client: aws_sdk_s3::Client, bucket: impl Into<String>, prefix: impl Into<String>) -> Self {
        let mut quiet = client.config().to_builder();
        quiet.set_interceptors(std::iter::empty());
        let signer = aws_sdk_s3::Client::from_conf(quiet.build());
        Self {
            client,
            signer,
            bucket: bucket.into(),
            prefix: prefix.into(),
            multipart_threshold: MULTIPART_THRESHOLD,
            part_size: PART_SIZE,
        }
    }

    /// Changes when and how `put_file` splits an upload into parts.
    pub fn with_multipart(mut self, threshold: u64, part_size: u64) -> Self {
        self.multipart_threshold = threshold;
        self.part_size = part_size.max(5 * 1024 * 1024);
        self
    }

    /// The bucket's name.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// `s3://bucket/prefix+key`, for reports.
    pub fn url(&self, key: &str) -> String {
        format!("s3://{}/{}{}", self.bucket, self.prefix, key)
    }

    fn full_key(&self, key: &str) -> Result<String, StoreError> {
        validate_key(key)?;
        Ok(format!("{}{}", self.prefix, key))
    }

    fn fail<E: std::error::Error>(&self, action: &str, key: &str, error: &E) -> StoreError {
        StoreError::backend(format!("{action} s3://{}/{}{key}", self.bucket, self.prefix), S3Failure(error_text(error)))
    }

    /// GetObject of `key` (of `range`, when given); a missing object is [`StoreError::NotFound`],
    /// any other failure named by `action`.
    async fn get_object(
        &self,
        key: &str,
        range: Option<String>,
        action: &str,
    ) -> Result<aws_sdk_s3::operation::get_object::GetObjectOutput, StoreError> {
        let full_key = self.full_key(key)?;
        match self.client.get_object().bucket(&self.bucket).key(full_key).set_range(range).send().await {
            Ok(output) => Ok(output),
            Err(e) if is_not_found(&e) => Err(StoreError::NotFound(key.to_owned())),
            Err(e) => Err(self.fail(action, key, &e)),
        }
    }

    async fn put_multipart(&self, key: &str, full_key: &str, path: &Path, size: u64) -> Result<(), StoreError> {
        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(full_key)
            .send()
            .await
            .map_err(|e| self.fail("start multipart upload of", key, &e))?;
        let upload_id = created.upload_id.unwrap_or_default();
        let parts = size.div_ceil(self.part_size);
        let uploads = futures::stream::iter((0..parts).map(|index| {
            let offset = index * self.part_size;
            let length = self.part_size.min(size - offset);
            let (upload_id, path) = (upload_id.clone(), path.to_path_buf());
            async move {
                let body = ByteStream::read_from()
                    .path(&path)
                    .offset(offset)
                    .length(aws_sdk_s3::primitives::Length::Exact(length))
                    .build()
                    .await
                    .map_err(|e| self.fail("read part for", key, &e))?;
                let part_number = i32::try_from(index + 1).unwrap_or(i32::MAX);
                let sent = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(full_key)
                    .upload_id(upload_id)
                    .part_number(part_number)
                    .body(body)
                    .send()
                    .await
                    .map_err(|e| self.fail("upload part of", key, &e))?;
                Ok::<_, StoreError>(CompletedPart::builder().part_number(part_number).set_e_tag(sent.e_tag).build())
            }
        }))
        .buffered(PARTS_IN_FLIGHT)
        .try_collect::<Vec<_>>()
        .await;
        let completed = match uploads {
            Ok(parts) => parts,
            Err(error) => {
                // Parts of an abandoned upload are billed as storage until aborted.
                let _ = self
                    .client
                    .abort_multipart_upload()
                    .bucket(&self.bucket)
                    .key(full_key)
                    .upload_id(&upload_id)
                    .send()
                    .await;
                return Err(error);
            }
        };
        let completed = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(full_key)
            .upload_id(&upload_id)
            .multipart_upload(CompletedMultipartUpload::builder().set_parts(Some(completed)).build())
            .send()
            .await;
        match completed {
            Ok(_) => Ok(()),
            Err(e) if completed_under_another_name(&e) => Ok(()),
            Err(e) => Err(self.fail("complete multipart upload of", key, &e)),
        }
    }
}

/// moto answers a successful CompleteMultipartUpload with the root element
/// `CompleteMultipartUploadResponse`, which the SDK cannot parse. A 200 carrying exactly that
/// element is a completed upload (S3's in-body failures arrive as `<Error>`, which parses).
fn completed_under_another_name(
    error: &aws_sdk_s3::error::SdkError<aws_sdk_s3::operation::complete_multipart_upload::CompleteMultipartUploadError>,
) -> bool {
    error.raw_response().is_some_and(|r| {
        r.status().as_u16() == 200
            && r.body().bytes().is_some_and(|b| b.windows(32).any(|w| w == b"<CompleteMultipartUploadResponse"))
    })
}

fn is_not_found(error: &aws_sdk_s3::error::SdkError<aws_sdk_s3::operation::get_object::GetObjectError>) -> bool {
    error.as_service_error().is_some_and(|e| e.is_no_such_key())
        || error.raw_response().is_some_and(|r| r.status().as_u16() == 404)
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn put(&self, key: &str, data: Bytes) -> Result<(), StoreError> {
        let full_key = self.full_key(key)?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(full_key)
            .body(ByteStream::from(data))
            .send()
            .await
            .map_err(|e| self.fail("put", key, &e))?;
        Ok(())
    }

    async fn put_file(&self, key: &str, path: &Path) -> Result<u64, StoreError> {
        let full_key = self.full_key(key)?;
        let size = tokio::fs::metadata(path)
            .await
            .map_err(|e| StoreError::backend(format!("put {key} from {}", path.display()), e))?
            .len();
        if size > self.multipart_threshold {
            self.put_multipart(key, &full_key, path, size).await?;
            return Ok(size);
        }
        let body = ByteStream::from_path(path).await.map_err(|e| self.fail("read file for", key, &e))?;
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(full_key)
            .body(body)
            .send()
            .await
            .map_err(|e| self.fail("put", key, &e))?;
        Ok(size)
    }

    async fn get(&self, key: &str) -> Result<Bytes, StoreError> {
        let output = self.get_object(key, None, "get").await?;
        let data = output.body.collect().await.map_err(|e| self.fail("read", key, &e))?;
        Ok(data.into_bytes())
    }

    async fn get_range(&self, key: &str, start: u64, end: u64) -> Result<Bytes, StoreError> {
        if start >= end {
            return Ok(Bytes::new());
        }
        // HTTP ranges are inclusive; a range past the end is cut short by S3, not refused.
        let output = self.get_object(key, Some(format!("bytes={start}-{}", end - 1)), "get_range").await?;
        let data = output.body.collect().await.map_err(|e| self.fail("read", key, &e))?;
        Ok(data.into_bytes())
    }

    async fn size(&self, key: &str) -> Result<u64, StoreError> {
        let full_key = self.full_key(key)?;
        match self.client.head_object().bucket(&self.bucket).key(full_key).send().await {
            Ok(output) => Ok(output.content_length().and_then(|n| u64::try_from(n).ok()).unwrap_or(0)),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {
                Err(StoreError::NotFound(key.to_owned()))
            }
            Err(e) => Err(self.fail("head", key, &e)),
        }
    }

    async fn get_to_file(&self, key: &str, path: &Path) -> Result<u64, StoreError> {
        let output = self.get_object(key, None, "get").await?;
        let local = |e: std::io::Error| StoreError::backend(format!("write {}", path.display()), e);
        let mut file = tokio::fs::File::create(path).await.map_err(local)?;
        let mut body = output.body;
        let mut written = 0u64;
        while let Some(chunk) = body.try_next().await.map_err(|e| self.fail("read", key, &e))? {
            file.write_all(&chunk).await.map_err(local)?;
            written += chunk.len() as u64;
        }
        file.flush().await.map_err(local)?;
        Ok(written)
    }

    async fn get_stream(&self, key: &str) -> Result<ObjectReader, StoreError> {
        let output = self.get_object(key, None, "get").await?;
        let size = output.content_length.unwrap_or(0).max(0) as u64;
        let failed = self.fail("read", key, &S3Failure("the body broke off".into()));
        let context = failed.to_string();
        // Chunks are passed on as the SDK hands them over: nothing is buffered beyond one.
        let chunks = futures::stream::unfold(Some(output.body), move |body| {
            let context = context.clone();
            async move {
                let mut body = body?;
                match body.try_next().await {
                    Ok(Some(chunk)) => Some((Ok(chunk), Some(body))),
                    Ok(None) => None,
                    Err(e) => Some((Err(StoreError::backend(context, S3Failure(error_text(&e)))), None)),
                }
            }
        });
        Ok(ObjectReader { size, chunks: Box::pin(chunks) })
    }

    async fn list_page(&self, prefix: &str, after: Option<&str>, limit: usize) -> Result<ListPage, StoreError> {
        let limit = limit.clamp(1, LIST_PAGE_MAX);
        let page = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(format!("{}{}", self.prefix, prefix))
            .set_start_after(after.map(|a| format!("{}{a}", self.prefix)))
            .max_keys(i32::try_from(limit).unwrap_or(i32::MAX))
            .send()
            .await
            .map_err(|e| self.fail("list", prefix, &e))?;
        let more = page.is_truncated.unwrap_or(false);
        let mut objects: Vec<ObjectMeta> = page
            .contents
            .unwrap_or_default()
            .into_iter()
            .filter_map(|object| {
                let key = object.key.as_deref()?.strip_prefix(&self.prefix)?.to_owned();
                Some(ObjectMeta { key, size: object.size.unwrap_or(0).max(0) as u64 })
            })
            .collect();
        objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(ListPage { objects, more })
    }

    async fn presigned_get(&self, key: &str, expires: Duration) -> Result<Option<String>, StoreError> {
        let full_key = self.full_key(key)?;
        let config =
            aws_sdk_s3::presigning::PresigningConfig::expires_in(expires).map_err(|e| self.fail("presign", key, &e))?;
        // Presigning is local: it signs with the credentials at hand and sends nothing.
        let request = self
            .signer
            .get_object()
            .bucket(&self.bucket)
            .key(full_key)
            .presigned(config)
            .await
            .map_err(|e| self.fail("presign", key, &e))?;
        Ok(Some(request.uri().to_owned()))
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, StoreError> {
        let mut pages = self
            .client
            .list_objects_v2()
            .bucket(&self.bucket)
            .prefix(format!("{}{}", self.prefix, prefix))
            .into_paginator()
            .send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.fail("list", prefix, &e))?;
            for object in page.contents.unwrap_or_default() {
                let Some(key) = object.key.as_deref().and_then(|k| k.strip_prefix(&self.prefix)) else { continue };
                found.push(ObjectMeta { key: key.to_owned(), size: object.size.unwrap_or(0).max(0) as u64 });
            }
        }
        // S3 lists in UTF-8 byte order already; sorting keeps the contract if a backend does not.
        found.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(found)
    }

    async fn delete(&self, keys: &[String]) -> Result<(), StoreError> {
        for batch in keys.chunks(DELETE_BATCH) {
            let mut objects = Vec::with_capacity(batch.len());
            for key in batch {
                let full_key = self.full_key(key)?;
                let object =
                    ObjectIdentifier::builder().key(full_key).build().map_err(|e| self.fail("delete", key, &e))?;
                objects.push(object);
            }
            let delete = Delete::builder()
                .set_objects(Some(objects))
                .quiet(true)
                .build()
                .map_err(|e| self.fail("delete", batch.first().map(String::as_str).unwrap_or_default(), &e))?;
            let output = self
                .client
                .delete_objects()
                .bucket(&self.bucket)
                .delete(delete)
                .send()
                .await
                .map_err(|e| self.fail("delete", batch.first().map(String::as_str).unwrap_or_default(), &e))?;
            if let Some(error) = output.errors.unwrap_or_default().into_iter().next() {
                let key = error.key.unwrap_or_default();
                let message = format!("{}: {}", error.code.unwrap_or_default(), error.message.unwrap_or_default());
                return Err(StoreError::backend(format!("delete s3://{}/{key}", self.bucket), S3Failure(message)));
            }
        }
        Ok(())
    }
}
