//! The one state struct every handler receives.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use crate::callerid::{CallerIdIndex, Card, CardStore, PHONE_PROPERTIES};
use crate::crm::{Catalog, PropertyDef};
use crate::store::{DynStore, ObjectType, PhoneRow, Portal, StoreResult, TokenInfo, User};

/// Settings that are not per portal.
#[derive(Debug, Clone)]
pub struct Config {
    /// Most caller-ID matches returned by one lookup.
    pub match_cap: usize,
    /// Largest request body accepted, in bytes.
    pub body_limit: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            match_cap: 100,
            body_limit: 1024 * 1024,
        }
    }
}

pub struct AppState {
    pub store: DynStore,
    pub index: CallerIdIndex,
    /// What caller ID shows of each record; see `callerid/cards.rs` for how it stays exact.
    pub cards: Arc<CardStore>,
    pub config: Config,
    /// Serialises record writes that touch phone numbers, so the index applies diffs in the
    /// order the store committed them. Call logging does not take it.
    pub write_gate: tokio::sync::Mutex<()>,
    /// Portals and tokens change rarely and are read on every request; both caches are filled
    /// from the store and updated by the only code paths that change them.
    portals: RwLock<HashMap<i64, Portal>>,
    tokens: RwLock<HashMap<String, TokenInfo>>,
    /// Users per portal: inbound-call resolves `userId` to an owner on every logged call.
    users: RwLock<HashMap<i64, Arc<Vec<User>>>>,
    /// Custom property definitions per portal, loaded on first use.
    custom_properties: RwLock<HashMap<i64, Vec<(ObjectType, PropertyDef)>>>,
    pub started: Instant,
    pub index_ready_ms: u128,
    /// Every record up to this id has its numbers in the index; see
    /// [`AppState::file_external_records`].
    filed_up_to: std::sync::atomic::AtomicI64,
}

impl AppState {
    /// Loads the index from the store and starts the call logger.
    pub async fn load(store: DynStore, config: Config) -> StoreResult<Self> {
        let started = Instant::now();
        // Read before the index is built: whatever commits meanwhile is above it, and the
        // watcher files it (filing a row twice is harmless).
        let filed_up_to = store.max_record_id().await?;
        // Built page by page from integer columns: 10 million numbers never sit in memory
        // twice, and nothing is allocated per row but the rare extension.
        let index = CallerIdIndex::default();
        let mut after = None;
        loop {
            let page = store.index_rows(after, 250_000).await?;
            let Some(last) = page.last() else { break };
            after = Some((
                last.object_id,
                PHONE_PROPERTIES
                    .get(last.property as usize)
                    .copied()
                    .unwrap_or("~")
                    .to_string(),
            ));
            index.load(&page);
        }
        let ignored: Vec<(i64, String)> = store
            .ignored_numbers(None)
            .await?
            .into_iter()
            .map(|n| (n.portal_id, n.e164))
            .collect();
        index.load_ignored(&ignored);
        let portals: HashMap<i64, Portal> = store
            .portals()
            .await?
            .into_iter()
            .map(|p| (p.id, p))
            .collect();
        for p in portals.values() {
            if p.suffix_digits.is_some() {
                let rows = store.phones_of_portal(p.id).await?;
                index.set_suffix(p.id, p.suffix_digits, &rows);
            }
        }
        let cards = Arc::new(CardStore::default());
        tokio::spawn(warm_cards(store.clone(), cards.clone()));
        Ok(AppState {
            store,
            index,
            cards,
            config,
            write_gate: tokio::sync::Mutex::new(()),
            portals: RwLock::new(portals),
            tokens: RwLock::new(HashMap::new()),
            custom_properties: RwLock::new(HashMap::new()),
            users: RwLock::new(HashMap::new()),
            started,
            index_ready_ms: started.elapsed().as_millis(),
            filed_up_to: std::sync::atomic::AtomicI64::new(filed_up_to),
        })
    }

    /// Files the phone numbers of records that another process added since the last call
    /// (`switchboard import` into the database of a running server), and returns how many
    /// rows it read. Ids only grow, so such records are all above the highest id seen so far;
    /// the records this server wrote there are read too, and filing them again changes
    /// nothing. Each page is read and filed under the write gate, so no record write of this
    /// server runs between the read and the filing: the rows filed are what the index must
    /// hold for those records, and a write after them applies its own diff. The gate is taken
    /// page by page so that a large import does not hold up the API's writes.
    pub async fn file_external_records(&self) -> StoreResult<usize> {
        use std::sync::atomic::Ordering;
        let seen = self.filed_up_to.load(Ordering::Acquire);
        let max = self.store.max_record_id().await?;
        if max <= seen {
            return Ok(0);
        }
        const PAGE: i64 = 10_000;
        // Keys after (seen + 1, "") are every row of the records above `seen`.
        let (mut after, mut filed) = ((seen + 1, String::new()), 0);
        loop {
            let _gate = self.write_gate.lock().await;
            let page = self.store.phones_after(after.clone(), PAGE).await?;
            let Some((_, last)) = page.last() else { break };
            after = (last.object_id, last.property.clone());
            let full = page.len() as i64 == PAGE;
            let mut by_portal: HashMap<i64, Vec<PhoneRow>> = HashMap::new();
            for (portal, row) in page {
                by_portal.entry(portal).or_default().push(row);
            }
            for (portal, rows) in by_portal {
                filed += rows.len();
                self.index.apply(portal, &[], &rows);
            }
            if !full {
                break;
            }
        }
        self.filed_up_to.store(max.max(after.0), Ordering::Release);
        if filed > 0 {
            tracing::debug!(
                rows = filed,
                "caller ID filed the numbers of records above the last id it had seen"
            );
        }
        Ok(filed)
    }

    pub async fn portal(&self, id: i64) -> StoreResult<Option<Portal>> {
        if let Some(p) = self.portals.read().expect("lock").get(&id) {
            return Ok(Some(p.clone()));
        }
        let p = self.store.portal(id).await?;
        if let Some(p) = &p {
            self.portals.write().expect("lock").insert(id, p.clone());
        }
        Ok(p)
    }

    pub async fn update_portal(&self, portal: Portal) -> StoreResult<()> {
        self.store.update_portal(&portal).await?;
        if let Some(n) = portal.suffix_digits {
            let rows = self.store.phones_of_portal(portal.id).await?;
            self.index.set_suffix(portal.id, Some(n), &rows);
        } else {
            self.index.set_suffix(portal.id, None, &[]);
        }
        self.portals
            .write()
            .expect("lock")
            .insert(portal.id, portal);
        Ok(())
    }

    /// Resolves a token hash. Tokens cannot be revoked yet, so a cached hit stays right.
    pub async fn token(&self, hash: &str) -> StoreResult<Option<TokenInfo>> {
        if let Some(t) = self.tokens.read().expect("lock").get(hash) {
            return Ok(Some(t.clone()));
        }
        let t = self.store.token(hash).await?;
        if let Some(t) = &t {
            self.tokens
                .write()
                .expect("lock")
                .insert(hash.to_string(), t.clone());
        }
        Ok(t)
    }

    /// The property catalog of one object type in one portal.
    pub async fn catalog(&self, portal_id: i64, ty: ObjectType) -> StoreResult<Catalog> {
        let cached = self
            .custom_properties
            .read()
            .expect("lock")
            .get(&portal_id)
            .cloned();
        let all = match cached {
            Some(all) => all,
            None => {
                let all = crate::crm::custom_definitions(self.store.as_ref(), portal_id).await?;
                self.custom_properties
                    .write()
                    .expect("lock")
                    .insert(portal_id, all.clone());
                all
            }
        };
        Ok(Catalog {
            object_type: ty,
            custom: all
                .into_iter()
                .filter(|(t, _)| *t == ty)
                .map(|(_, d)| d)
                .collect(),
        })
    }

    /// Stores a custom property and refreshes the cache.
    pub async fn create_property(
        &self,
        portal_id: i64,
        ty: ObjectType,
        def: &PropertyDef,
    ) -> StoreResult<()> {
        let json = serde_json::to_string(def).expect("property serialises");
        self.store
            .create_custom_property(portal_id, ty, &def.name, &json)
            .await?;
        self.custom_properties
            .write()
            .expect("lock")
            .remove(&portal_id);
        Ok(())
    }

    /// The portal's users (cached; [`AppState::create_user`] refreshes it).
    pub async fn users(&self, portal_id: i64) -> StoreResult<Arc<Vec<User>>> {
        if let Some(u) = self.users.read().expect("lock").get(&portal_id) {
            return Ok(u.clone());
        }
        let users = Arc::new(self.store.users(portal_id).await?);
        self.users
            .write()
            .expect("lock")
            .insert(portal_id, users.clone());
        Ok(users)
    }

    /// Creates a user and its owner.
    pub async fn create_user(
        &self,
        portal_id: i64,
        email: &str,
        first_name: &str,
        last_name: &str,
    ) -> StoreResult<User> {
        let user = self
            .store
            .create_user(portal_id, email, first_name, last_name)
            .await?;
        self.users.write().expect("lock").remove(&portal_id);
        Ok(user)
    }
}

/// Files every live record's card, page by page, after the index is ready: the server answers
/// meanwhile, and a lookup whose card is not filed yet reads the store, as it always may.
async fn warm_cards(store: DynStore, cards: Arc<CardStore>) {
    let started = Instant::now();
    let mut after = i64::MIN;
    loop {
        // A page that raced a record write is read again; after a few tries it is left to
        // fill on lookup, so constant writes cannot stall the warm-up.
        let mut last = None;
        for _ in 0..5 {
            let epoch = cards.epoch();
            let rows = match store.card_rows(after, 10_000).await {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!(error = %e, "caller-ID cards: warm-up stopped; lookups read the store");
                    return;
                }
            };
            last = rows.last().map(|r| r.id);
            let page: Vec<Card> = rows
                .iter()
                .filter_map(|r| {
                    Card::from_json(r.id, r.portal_id, r.object_type, r.updated_at, &r.properties_json)
                        .inspect_err(|e| tracing::warn!(id = r.id, error = %e, "record properties are not a JSON object of strings; no card"))
                        .ok()
                })
                .collect();
            if cards.insert(&page, epoch) {
                break;
            }
        }
        let Some(id) = last else { break };
        after = id;
    }
    cards.set_warm(started.elapsed());
    tracing::info!(
        cards = cards.len(),
        bytes = cards.memory_bytes(),
        seconds = started.elapsed().as_secs_f64(),
        "caller-ID cards ready"
    );
}
