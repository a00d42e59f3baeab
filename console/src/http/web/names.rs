//! Names beside ids on the log pages: devices by id (name, owner), users by username
//! (email), API tokens by id (name, owner), read once per page from the store. What
//! the store no longer has (a device removed since) is shown by its id. Everything
//! returned is escaped HTML.

use std::collections::HashMap;

use zmesh_shared::DeviceId;

use super::html::esc;
use crate::http::error::ApiError;
use crate::http::state::AppState;
use crate::store::{DeviceRow, UserRow};

pub struct Names {
    pub devices: HashMap<DeviceId, DeviceRow>,
    /// By username.
    pub users: HashMap<String, UserRow>,
    /// Token id → (name, owner's username).
    tokens: HashMap<String, (String, Option<String>)>,
    /// Names of devices removed since, as their `device.delete` events recorded them.
    removed: HashMap<String, String>,
}

impl Names {
    pub async fn load(state: &AppState) -> Result<Names, ApiError> {
        let devices = state.store.list_devices(state.network_id).await?;
        let users = state.store.list_users().await?;
        let tokens = state.store.list_tokens_with_owner().await?;
        Ok(Names {
            devices: devices.into_iter().map(|d| (d.id, d)).collect(),
            users: users.into_iter().map(|u| (u.username.clone(), u)).collect(),
            tokens: tokens
                .into_iter()
                .map(|t| (t.token.id.to_string(), (t.token.name, t.owner)))
                .collect(),
            removed: HashMap::new(),
        })
    }

    /// Remembers the name a removed device had (from its `device.delete` event).
    pub fn note_removed(&mut self, id: &str, name: &str) {
        self.removed.insert(id.to_string(), name.to_string());
    }

    /// The devices a user (username or email, case-insensitive) owns, or `None` when
    /// no such user exists.
    pub fn devices_of(&self, who: &str) -> Option<Vec<DeviceId>> {
        let u = self.users.values().find(|u| {
            u.username.eq_ignore_ascii_case(who)
                || u.email
                    .as_deref()
                    .is_some_and(|e| e.eq_ignore_ascii_case(who))
        })?;
        let owner = format!("user:{}", u.username);
        Some(
            self.devices
                .values()
                .filter(|d| d.owner == owner)
                .map(|d| d.id)
                .collect(),
        )
    }

    /// The device's name with its id on hover; a removed device: its id.
    pub fn device(&self, id: DeviceId) -> String {
        match self.devices.get(&id) {
            Some(d) => format!("<span class=\"dev\" title=\"{id}\">{}</span>", esc(&d.name)),
            None => format!(
                "<span class=\"mono small id\" title=\"device removed since\">{id}</span> \
                 <span class=\"muted small\">(removed)</span>"
            ),
        }
    }

    /// The device's owner: a user's email (or username) with `user:NAME` on hover;
    /// other owners (an admin token's label) as recorded.
    pub fn owner_of(&self, id: DeviceId) -> String {
        match self.devices.get(&id) {
            Some(d) => self.owner(&d.owner),
            None => String::new(),
        }
    }

    fn owner(&self, owner: &str) -> String {
        match owner.strip_prefix("user:") {
            Some(name) => {
                let shown = self
                    .users
                    .get(name)
                    .and_then(|u| u.email.as_deref())
                    .unwrap_or(name);
                format!(
                    "<span class=\"muted small\" title=\"{}\">{}</span>",
                    esc(owner),
                    esc(shown)
                )
            }
            None => format!("<span class=\"muted small\">{}</span>", esc(owner)),
        }
    }

    /// An audit actor or target (`device:ID`, `user:NAME`, `token:ID`, `admin:NAME`,
    /// `system`, …): the reference as recorded, with the name it stands for beside it.
    pub fn reference(&self, r: &str) -> String {
        // Ids may break anywhere: a long key id must not widen the table.
        let raw = format!("<span class=\"mono small id\">{}</span>", esc(r));
        let Some((kind, id)) = r.split_once(':') else {
            return raw;
        };
        let name = match kind {
            "device" => match id
                .parse::<DeviceId>()
                .ok()
                .and_then(|d| self.devices.get(&d))
            {
                Some(d) => Some(esc(&d.name)),
                None => self
                    .removed
                    .get(id)
                    .map(|n| format!("{} <span class=\"muted\">(removed)</span>", esc(n))),
            },
            "user" => self
                .users
                .get(id)
                .and_then(|u| u.email.as_deref())
                .filter(|e| *e != id)
                .map(esc),
            "token" => self.tokens.get(id).map(|(name, owner)| match owner {
                Some(o) => format!("{} <span class=\"muted\">of {}</span>", esc(name), esc(o)),
                None => esc(name),
            }),
            _ => None,
        };
        match name {
            Some(n) => format!("<b>{n}</b> {raw}"),
            None => raw,
        }
    }
}
