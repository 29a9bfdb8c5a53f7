//! The registry's state and every rule about changing it, apart from where it is kept.

use std::collections::{BTreeSet, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::record::{CustomEndpoint, EndpointChange, EndpointError, NewEndpoint, Owner};
use super::rules::is_valid_name;
use crate::model::EndpointRoute;
use crate::request_id::RequestId;

/// The format version of the stored ledger.
const VERSION: u32 = 1;

/// All endpoints, the names ever used, and the next limiter key.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Ledger {
    version: u32,
    next_limit_key: u64,
    endpoints: Vec<CustomEndpoint>,
    /// Names of deleted endpoints and names given up by a rename: taken forever.
    retired_names: BTreeSet<String>,
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
        // A hand-edited file must not hand out a limiter key twice.
        let past = ledger
            .endpoints
            .iter()
            .map(|e| e.limit_key + 1)
            .max()
            .unwrap_or(0);
        ledger.next_limit_key = ledger.next_limit_key.max(past);
        ledger.reindex();
        if ledger.routes.len() != ledger.endpoints.len() {
            return Err("two endpoints with one name".to_owned());
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
        self.routes.contains_key(name) || self.retired_names.contains(name)
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
        let live = self
            .endpoints
            .iter()
            .filter(|e| *e.account == *owner.account)
            .count();
        if live >= owner.quota {
            return Err(EndpointError::QuotaExceeded);
        }
        let now = now_ms();
        let endpoint = CustomEndpoint {
            id: self.fresh_id(),
            limit_key: self.next_limit_key,
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
        self.next_limit_key += 1;
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
        let mine = self
            .endpoints
            .iter()
            .filter(|e| *e.account == *owner.account);
        let total = mine.clone().count();
        let items = mine
            .filter(|e| e.project_id == owner.project_id)
            .cloned()
            .collect();
        (items, total)
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
            if *name != self.endpoints[at].endpoint_name && self.name_taken(name) {
                return Err(EndpointError::NameUsed);
            }
        }
        let endpoint = &mut self.endpoints[at];
        if let Some(name) = &change.endpoint_name {
            if *name != endpoint.endpoint_name {
                let old = std::mem::replace(&mut endpoint.endpoint_name, name.clone());
                self.retired_names.insert(old);
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
        self.retired_names.insert(endpoint.endpoint_name);
        self.reindex();
        Ok(())
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// 32 random hex digits as a version-4 UUID: `xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`.
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
    fn corrupt_or_foreign_ledgers_are_refused() {
        assert!(Ledger::from_json(b"not json").is_err());
        assert!(
            Ledger::from_json(
                br#"{"version":2,"next_limit_key":0,"endpoints":[],"retired_names":[]}"#
            )
            .is_err()
        );
        assert!(
            Ledger::from_json(
                br#"{"version":1,"next_limit_key":0,"endpoints":[],"retired_names":[]}"#
            )
            .is_ok()
        );
    }
}
