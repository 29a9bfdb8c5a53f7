//! The registry's state and every rule about changing it, apart from where it is kept.

use std::collections::{BTreeMap, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::record::{CustomEndpoint, EndpointChange, EndpointError, NewEndpoint, Owner};
use super::rules::is_valid_name;
use crate::model::EndpointRoute;
use crate::request_id::RequestId;

/// The format version of the stored ledger.
const VERSION: u32 = 1;

/// How many names an account may use over its lifetime: live endpoints, deleted ones and names
/// given up by renames. Names are never reused, so without a bound a token could grow the
/// ledger (and every rewrite of it) forever by renaming in a loop; past it, 6297.
pub(crate) const NAMES_PER_ACCOUNT: usize = 1000;

/// All endpoints, the names ever used, and the next limiter key.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Ledger {
    version: u32,
    next_limit_key: u64,
    endpoints: Vec<CustomEndpoint>,
    /// Names of deleted endpoints and names given up by a rename, with the account that used
    /// them: taken forever.
    retired_names: BTreeMap<String, String>,
    /// Live names → their routes, for inference; rebuilt after each change.
    #[serde(skip)]
    routes: HashMap<String, EndpointRoute>,
}

impl Ledger {
    pub(crate) fn new() -> Self {
        Self {
            version: VERSION,
            ..Self::default()
        }
    }

    /// A stored ledger, checked.
    pub(crate) fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let mut ledger: Self = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if ledger.version != VERSION {
            return Err(format!("unknown ledger version {}", ledger.version));
        }
        // A hand-edited file must not hand out a limiter key or an id twice, nor a name.
        let past = ledger
            .endpoints
            .iter()
            .map(|e| e.limit_key.checked_add(1))
            .max()
            .unwrap_or(Some(0))
            .ok_or("a limiter key out of range")?;
        ledger.next_limit_key = ledger.next_limit_key.max(past);
        ledger.reindex();
        let ids: std::collections::HashSet<&str> =
            ledger.endpoints.iter().map(|e| e.id.as_str()).collect();
        let keys: std::collections::HashSet<u64> =
            ledger.endpoints.iter().map(|e| e.limit_key).collect();
        if ledger.routes.len() != ledger.endpoints.len()
            || ids.len() != ledger.endpoints.len()
            || keys.len() != ledger.endpoints.len()
            || ledger
                .routes
                .keys()
                .any(|n| ledger.retired_names.contains_key(n))
        {
            return Err("an id, a limiter key or a name used twice".to_owned());
        }
        Ok(ledger)
    }

    pub(crate) fn to_json(&self) -> Vec<u8> {
        // A ledger holds strings and integers only: it always serialises.
        serde_json::to_vec_pretty(self).unwrap_or_default()
    }

    fn reindex(&mut self) {
        self.routes = self
            .endpoints
            .iter()
            .map(|e| (e.endpoint_name.clone(), e.route()))
            .collect();
    }

    pub(crate) fn resolve(&self, name: &str) -> Option<EndpointRoute> {
        self.routes.get(name).cloned()
    }

    fn name_taken(&self, name: &str) -> bool {
        self.routes.contains_key(name) || self.retired_names.contains_key(name)
    }

    /// How many live endpoints the account has, in all its projects.
    fn live(&self, account: &str) -> usize {
        self.endpoints
            .iter()
            .filter(|e| *e.account == *account)
            .count()
    }

    /// Whether the account, with `live` endpoints, has used up its names (see
    /// [`NAMES_PER_ACCOUNT`]): its live names and those it gave up count alike.
    fn names_exhausted(&self, account: &str, live: usize) -> bool {
        let retired = self
            .retired_names
            .values()
            .filter(|a| *a == account)
            .count();
        live + retired >= NAMES_PER_ACCOUNT
    }

    fn position(&self, owner: &Owner, id: &str) -> Result<usize, EndpointError> {
        self.endpoints
            .iter()
            .position(|e| {
                e.id == id && e.project_id == owner.project_id && *e.account == *owner.account
            })
            .ok_or(EndpointError::NotFound)
    }

    pub(crate) fn create(
        &mut self,
        owner: &Owner,
        new: NewEndpoint,
    ) -> Result<CustomEndpoint, EndpointError> {
        if !is_valid_name(&new.endpoint_name) {
            return Err(EndpointError::NameInvalid);
        }
        if self.name_taken(&new.endpoint_name) {
            return Err(EndpointError::NameUsed);
        }
        let live = self.live(&owner.account);
        if live >= owner.quota || self.names_exhausted(&owner.account, live) {
            return Err(EndpointError::QuotaExceeded);
        }
        let limit_key = self.next_limit_key;
        let next_limit_key = limit_key
            .checked_add(1)
            .ok_or(EndpointError::QuotaExceeded)?;
        let now = now_ms();
        let endpoint = CustomEndpoint {
            id: self.fresh_id(),
            limit_key,
            account: owner.account.to_string(),
            project_id: owner.project_id.clone(),
            endpoint_name: new.endpoint_name,
            infer_service_id: new.infer_service_id,
            served_model_name: new.served_model_name,
            remark: new.remark,
            rpm: new.rpm,
            tpm: new.tpm,
            created_at: now,
            updated_at: now,
        };
        self.next_limit_key = next_limit_key;
        self.endpoints.push(endpoint.clone());
        self.reindex();
        Ok(endpoint)
    }

    fn fresh_id(&self) -> String {
        loop {
            let id = uuid_v4(RequestId::generate().as_str());
            if self.endpoints.iter().all(|e| e.id != id) {
                return id;
            }
        }
    }

    pub(crate) fn get(&self, owner: &Owner, id: &str) -> Result<CustomEndpoint, EndpointError> {
        self.position(owner, id).map(|i| self.endpoints[i].clone())
    }

    /// The endpoints of the owner's project, oldest first, and how many the account has.
    pub(crate) fn list(&self, owner: &Owner) -> (Vec<CustomEndpoint>, usize) {
        let items = self
            .endpoints
            .iter()
            .filter(|e| *e.account == *owner.account && e.project_id == owner.project_id)
            .cloned()
            .collect();
        (items, self.live(&owner.account))
    }

    pub(crate) fn update(
        &mut self,
        owner: &Owner,
        id: &str,
        change: EndpointChange,
    ) -> Result<CustomEndpoint, EndpointError> {
        let at = self.position(owner, id)?;
        if let Some(name) = &change.endpoint_name {
            if !is_valid_name(name) {
                return Err(EndpointError::NameInvalid);
            }
            if *name != self.endpoints[at].endpoint_name {
                if self.name_taken(name) {
                    return Err(EndpointError::NameUsed);
                }
                if self.names_exhausted(&owner.account, self.live(&owner.account)) {
                    return Err(EndpointError::QuotaExceeded);
                }
            }
        }
        let endpoint = &mut self.endpoints[at];
        if let Some(name) = &change.endpoint_name {
            if *name != endpoint.endpoint_name {
                let old = std::mem::replace(&mut endpoint.endpoint_name, name.clone());
                self.retired_names.insert(old, endpoint.account.clone());
            }
        }
        let endpoint = &mut self.endpoints[at];
        if let Some(remark) = &change.remark {
            endpoint.remark.clone_from(remark);
        }
        change.apply_limits(endpoint);
        endpoint.updated_at = now_ms();
        let endpoint = endpoint.clone();
        self.reindex();
        Ok(endpoint)
    }

    pub(crate) fn delete(&mut self, owner: &Owner, id: &str) -> Result<(), EndpointError> {
        let at = self.position(owner, id)?;
        let endpoint = self.endpoints.remove(at);
        self.retired_names
            .insert(endpoint.endpoint_name, endpoint.account);
        self.reindex();
        Ok(())
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// 32 hex digits in a version-4 UUID's form: `xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`. The
/// digits are a request id's: unique, not unguessable (an endpoint is found by its id only
/// within its account and project).
fn uuid_v4(hex: &str) -> String {
    let h = hex.as_bytes();
    let variant = b"89ab"[usize::from(h[16] % 4)];
    let mut out = String::with_capacity(36);
    for (i, &b) in h.iter().enumerate() {
        if matches!(i, 8 | 12 | 16 | 20) {
            out.push('-');
        }
        out.push(match i {
            12 => '4',
            16 => char::from(variant),
            _ => char::from(b),
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(account: &str, project: &str) -> Owner {
        Owner {
            account: account.into(),
            project_id: project.to_owned(),
            quota: 2,
        }
    }

    fn new(name: &str) -> NewEndpoint {
        NewEndpoint {
            endpoint_name: name.to_owned(),
            infer_service_id: "svc".to_owned(),
            served_model_name: "m".to_owned(),
            remark: String::new(),
            rpm: None,
            tpm: None,
        }
    }

    #[test]
    fn ids_are_version_4_uuids() {
        let id = uuid_v4("0123456789abcdef0123456789abcdef");
        assert_eq!(id.len(), 36);
        assert_eq!(&id[..14], "01234567-89ab-");
        assert_eq!(&id[14..15], "4");
        assert!("89ab".contains(&id[19..20]));
    }

    #[test]
    fn names_stay_taken_after_delete_and_rename() {
        let (a, mut ledger) = (owner("acct", "p"), Ledger::new());
        let first = ledger.create(&a, new("first")).unwrap();
        ledger
            .update(
                &a,
                &first.id,
                EndpointChange {
                    endpoint_name: Some("renamed".to_owned()),
                    ..EndpointChange::default()
                },
            )
            .unwrap();
        assert!(matches!(
            ledger.create(&a, new("first")),
            Err(EndpointError::NameUsed)
        ));
        ledger.delete(&a, &first.id).unwrap();
        assert!(matches!(
            ledger.create(&a, new("renamed")),
            Err(EndpointError::NameUsed)
        ));
        assert!(ledger.resolve("renamed").is_none());
        let again = Ledger::from_json(&ledger.to_json()).unwrap();
        assert!(matches!(
            again.clone().create(&a, new("renamed")),
            Err(EndpointError::NameUsed)
        ));
    }

    #[test]
    fn quota_counts_live_endpoints_of_the_account_across_projects() {
        let mut ledger = Ledger::new();
        let (p1, p2, other) = (owner("a", "p1"), owner("a", "p2"), owner("b", "p1"));
        ledger.create(&p1, new("one")).unwrap();
        let two = ledger.create(&p2, new("two")).unwrap();
        assert!(matches!(
            ledger.create(&p1, new("three")),
            Err(EndpointError::QuotaExceeded)
        ));
        ledger.create(&other, new("other")).unwrap();
        ledger.delete(&p2, &two.id).unwrap();
        ledger.create(&p1, new("three")).unwrap();
        let (items, total) = ledger.list(&p1);
        assert_eq!((items.len(), total), (2, 2));
        // Another project's endpoint is not found from this one.
        assert!(matches!(
            ledger.get(&p2, &items[0].id),
            Err(EndpointError::NotFound)
        ));
    }

    #[test]
    fn an_account_cannot_grow_the_ledger_forever_by_renaming() {
        let (a, mut ledger) = (owner("acct", "p"), Ledger::new());
        let id = ledger.create(&a, new("n0")).unwrap().id;
        let rename = |name: String| EndpointChange {
            endpoint_name: Some(name),
            ..EndpointChange::default()
        };
        for i in 1..NAMES_PER_ACCOUNT {
            ledger.update(&a, &id, rename(format!("n{i}"))).unwrap();
        }
        assert!(matches!(
            ledger.update(&a, &id, rename("one-more".to_owned())),
            Err(EndpointError::QuotaExceeded)
        ));
        // Other changes, and other accounts, are not held back.
        assert!(ledger.update(&a, &id, EndpointChange::default()).is_ok());
        ledger.create(&owner("other", "p"), new("theirs")).unwrap();
    }

    #[test]
    fn a_hand_edited_ledger_with_a_duplicate_is_refused() {
        let mut ledger = Ledger::new();
        ledger.create(&owner("a", "p"), new("one")).unwrap();
        let mut value: serde_json::Value = serde_json::from_slice(&ledger.to_json()).unwrap();
        let copy = value["endpoints"][0].clone();
        value["endpoints"].as_array_mut().unwrap().push(copy);
        assert!(Ledger::from_json(&serde_json::to_vec(&value).unwrap()).is_err());
        // A live name that is also retired.
        let mut value: serde_json::Value = serde_json::from_slice(&ledger.to_json()).unwrap();
        value["retired_names"]["one"] = "a".into();
        assert!(Ledger::from_json(&serde_json::to_vec(&value).unwrap()).is_err());
        // A limiter key at the top of the range: refused, not overflowed.
        let mut value: serde_json::Value = serde_json::from_slice(&ledger.to_json()).unwrap();
        value["endpoints"][0]["limit_key"] = u64::MAX.into();
        assert!(Ledger::from_json(&serde_json::to_vec(&value).unwrap()).is_err());
        value["endpoints"][0]["limit_key"] = (u64::MAX - 1).into();
        let mut loaded = Ledger::from_json(&serde_json::to_vec(&value).unwrap()).unwrap();
        assert!(matches!(
            loaded.create(&owner("a", "p"), new("two")),
            Err(EndpointError::QuotaExceeded)
        ));
    }

    #[test]
    fn corrupt_or_foreign_ledgers_are_refused() {
        assert!(Ledger::from_json(b"not json").is_err());
        assert!(
            Ledger::from_json(
                br#"{"version":2,"next_limit_key":0,"endpoints":[],"retired_names":{}}"#
            )
            .is_err()
        );
        assert!(
            Ledger::from_json(
                br#"{"version":1,"next_limit_key":0,"endpoints":[],"retired_names":{}}"#
            )
            .is_ok()
        );
    }

    #[test]
    fn a_create_counts_each_live_endpoint_once() {
        let (a, mut ledger) = (owner("acct", "p"), Ledger::new());
        let id = ledger.create(&a, new("n0")).unwrap().id;
        let rename = |name: String| EndpointChange {
            endpoint_name: Some(name),
            ..EndpointChange::default()
        };
        // One live endpoint and NAMES_PER_ACCOUNT - 2 names given up: one name left.
        for i in 1..=NAMES_PER_ACCOUNT - 2 {
            ledger.update(&a, &id, rename(format!("n{i}"))).unwrap();
        }
        // The last name and the second place of the quota (2) are both free: counting the
        // live endpoint twice would refuse this.
        let second = ledger.create(&a, new("last")).unwrap();
        assert!(matches!(
            ledger.create(&a, new("over")),
            Err(EndpointError::QuotaExceeded)
        ));
        // A delete frees a place of the quota, not a name.
        ledger.delete(&a, &second.id).unwrap();
        assert!(matches!(
            ledger.create(&a, new("over")),
            Err(EndpointError::QuotaExceeded)
        ));
        let (items, total) = ledger.list(&a);
        assert_eq!((items.len(), total), (1, 1));
    }
}
