//! The [`ObjectStore`] contract.

use bytes::Bytes;

use crate::store::{ObjectStore, StoreError};

/// Runs every object store check against an empty store.
pub async fn run_all(store: &dyn ObjectStore) {
    put_get_overwrite(store).await;
    missing_objects(store).await;
    list_by_prefix(store).await;
    list_in_pages(store).await;
    streamed_reads(store).await;
    files_round_trip(store).await;
    delete_is_idempotent(store).await;
    invalid_keys(store).await;
    ranges_and_sizes(store).await;
}

/// A byte-range task's reads: any range of an object, cut short at its end, and its size.
async fn ranges_and_sizes(store: &dyn ObjectStore) {
    store.put("conf/range/abc", Bytes::from_static(b"0123456789")).await.expect("put");
    assert_eq!(store.get_range("conf/range/abc", 2, 5).await.expect("range"), Bytes::from_static(b"234"));
    assert_eq!(store.get_range("conf/range/abc", 8, 100).await.expect("past the end"), Bytes::from_static(b"89"));
    assert!(store.get_range("conf/range/abc", 4, 4).await.expect("empty").is_empty());
    assert_eq!(store.size("conf/range/abc").await.expect("size"), 10);
    assert!(matches!(store.size("conf/range/missing").await, Err(StoreError::NotFound(_))), "a missing object's size");
    assert!(matches!(store.get_range("conf/range/missing", 0, 1).await, Err(StoreError::NotFound(_))));
}

async fn put_get_overwrite(store: &dyn ObjectStore) {
    store.put("conf/a/one", Bytes::from_static(b"first")).await.expect("put");
    assert_eq!(store.get("conf/a/one").await.expect("get"), Bytes::from_static(b"first"));
    store.put("conf/a/one", Bytes::from_static(b"second")).await.expect("overwrite");
    assert_eq!(store.get("conf/a/one").await.expect("get"), Bytes::from_static(b"second"), "a put replaces");
    store.put("conf/a/empty", Bytes::new()).await.expect("empty put");
    assert!(store.get("conf/a/empty").await.expect("get empty").is_empty());
}

async fn missing_objects(store: &dyn ObjectStore) {
    assert!(matches!(store.get("conf/none").await, Err(StoreError::NotFound(_))), "get of a missing key is NotFound");
    let target = tempfile::NamedTempFile::new().expect("temp file");
    let result = store.get_to_file("conf/none", target.path()).await;
    assert!(matches!(result, Err(StoreError::NotFound(_))), "get_to_file of a missing key is NotFound");
}

async fn list_by_prefix(store: &dyn ObjectStore) {
    for key in ["conf/l/b/2", "conf/l/a", "conf/l/b/1", "conf/l/bc/9", "conf/m/x"] {
        store.put(key, Bytes::from(key.to_owned())).await.expect("put");
    }
    let keys = |list: Vec<crate::store::ObjectMeta>| list.into_iter().map(|o| o.key).collect::<Vec<_>>();
    assert_eq!(
        keys(store.list("conf/l/").await.expect("list")),
        ["conf/l/a", "conf/l/b/1", "conf/l/b/2", "conf/l/bc/9"],
        "list returns every key under the prefix, sorted"
    );
    assert_eq!(keys(store.list("conf/l/b/").await.expect("list")), ["conf/l/b/1", "conf/l/b/2"]);
    assert_eq!(
        keys(store.list("conf/l/b").await.expect("list")),
        ["conf/l/b/1", "conf/l/b/2", "conf/l/bc/9"],
        "prefixes are plain string prefixes, as in S3"
    );
    assert!(store.list("conf/nothing/").await.expect("list").is_empty());
    let sized = store.list("conf/m/").await.expect("list");
    assert_eq!(sized[0].size, "conf/m/x".len() as u64, "list reports sizes");
}

async fn list_in_pages(store: &dyn ObjectStore) {
    let keys: Vec<String> =
        ["a #b?c%20.txt", "sub/x", "sub/y", "z", "zz"].iter().map(|k| format!("conf/p/{k}")).collect();
    for key in &keys {
        store.put(key, Bytes::from(key.clone())).await.expect("put");
    }
    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list_page("conf/p/", after.as_deref(), 2).await.expect("list page");
        assert!(page.objects.len() <= 2, "a page holds at most its limit");
        seen.extend(page.objects.iter().map(|o| o.key.clone()));
        match (page.more, page.objects.last()) {
            (true, Some(last)) => after = Some(last.key.clone()),
            _ => break,
        }
    }
    assert_eq!(seen, keys, "pages visit every object once, in key order");
}

async fn streamed_reads(store: &dyn ObjectStore) {
    use futures::TryStreamExt;
    let data: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    store.put("conf/s/big", Bytes::from(data.clone())).await.expect("put");
    let reader = store.get_stream("conf/s/big").await.expect("get_stream");
    assert_eq!(reader.size, data.len() as u64, "the size comes before the bytes");
    let chunks: Vec<Bytes> = reader.chunks.try_collect().await.expect("read the stream");
    assert_eq!(chunks.concat(), data, "the stream is the object");
    let missing = store.get_stream("conf/s/none").await;
    assert!(matches!(missing, Err(StoreError::NotFound(_))), "get_stream of a missing key is NotFound");
}

async fn files_round_trip(store: &dyn ObjectStore) {
    let dir = tempfile::tempdir().expect("temp dir");
    let source = dir.path().join("source");
    let data: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    std::fs::write(&source, &data).expect("write");
    assert_eq!(store.put_file("conf/f/big", &source).await.expect("put_file"), data.len() as u64);
    let target = dir.path().join("target");
    assert_eq!(store.get_to_file("conf/f/big", &target).await.expect("get_to_file"), data.len() as u64);
    assert!(std::fs::read(&target).expect("read") == data, "a file round-trips byte for byte");
}

async fn delete_is_idempotent(store: &dyn ObjectStore) {
    store.put("conf/d/x", Bytes::from_static(b"x")).await.expect("put");
    store.delete(&["conf/d/x".to_owned()]).await.expect("delete");
    assert!(matches!(store.get("conf/d/x").await, Err(StoreError::NotFound(_))));
    store.delete(&["conf/d/x".to_owned(), "conf/d/never".to_owned()]).await.expect("deleting missing keys succeeds");
}

async fn invalid_keys(store: &dyn ObjectStore) {
    for key in ["", "/abs", "a//b", "a/../b", "a/./b", "trailing/"] {
        let result = store.put(key, Bytes::from_static(b"x")).await;
        assert!(matches!(result, Err(StoreError::InvalidKey(_))), "key `{key}` must be rejected");
    }
}
