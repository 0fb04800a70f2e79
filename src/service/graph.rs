//! The element graph: containment, attachments and manifest references,
//! for `context` and `tree`.

use crate::error::Result;
use crate::ids::{CircleId, ElementId};
use crate::model::Element;
use crate::model::State;
use crate::service::App;
use crate::store::cache::Inherited;
use crate::store::elements::ListFilter;
use crate::types::Capability;
use std::collections::HashMap;

/// How many steps up a cascade is looked for (manifests may nest).
const MAX_DEPTH: usize = 16;

/// How a neighbour relates to the element it was reached from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rel {
    Contains,
    ContainedBy,
    Attaches,
    AttachedTo,
    References,
    ReferencedBy,
    /// A websocket names a variable in its url or headers.
    Uses,
    UsedBy,
}

impl Rel {
    pub fn as_str(self) -> &'static str {
        match self {
            Rel::Contains => "contains",
            Rel::ContainedBy => "contained_by",
            Rel::Attaches => "attaches",
            Rel::AttachedTo => "attached_to",
            Rel::References => "references",
            Rel::ReferencedBy => "referenced_by",
            Rel::Uses => "uses",
            Rel::UsedBy => "used_by",
        }
    }
}

fn members_of(el: &Element) -> Vec<String> {
    crate::model::strings_at(&el.spec, "members")
}

/// How elements hang together: parents, members, what they inherit.
pub struct Graph<'a> {
    app: &'a App,
}

impl App {
    pub fn graph(&self) -> Graph<'_> {
        Graph { app: self }
    }
}

impl<'a> Graph<'a> {
    pub(super) fn app(&self) -> &'a App {
        self.app
    }

    /// The circle, or the containing element, of an element.
    pub async fn parent_of(&self, el: &Element) -> Result<Option<Element>> {
        match (&el.parent_id, el.is_root()) {
            (_, true) => Ok(None),
            (Some(id), _) => Ok(self.app.db.element_by_id(id).await?),
            (None, _) => Ok(self
                .app
                .db
                .element_by_id(&el.circle_id.as_element())
                .await?),
        }
    }

    /// Manifest members named in `spec.members`, resolved in the circle.
    pub async fn members(&self, el: &Element) -> Result<Vec<Element>> {
        let mut out = Vec::new();
        for slug in members_of(el) {
            if let Some(m) = self.app.db.find_in(&el.circle_id, &slug).await? {
                if m.state != State::Deleted {
                    out.push(m);
                }
            }
        }
        Ok(out)
    }

    /// Every element one step away, with how it relates.
    pub async fn neighbors(&self, el: &Element) -> Result<Vec<(Rel, Element)>> {
        let mut out = Vec::new();
        if let Some(p) = self.parent_of(el).await? {
            out.push((Rel::ContainedBy, p));
        }
        for c in self.app.db.children(el).await? {
            out.push((Rel::Contains, c));
        }
        for a in self.app.db.attachments_of(&el.id).await? {
            if let Some(s) = self.app.db.element_by_id(&a.source_id).await? {
                out.push((Rel::Attaches, s));
            }
        }
        for a in self.app.db.attached_to(&el.id).await? {
            if let Some(t) = self.app.db.element_by_id(&a.element_id).await? {
                out.push((Rel::AttachedTo, t));
            }
        }
        for m in self.members(el).await? {
            out.push((Rel::References, m));
        }
        for slug in crate::vars::used_by_spec(&el.spec) {
            if let Some(v) = self.app.db.find_in(&el.circle_id, &slug).await? {
                out.push((Rel::Uses, v));
            }
        }
        if self.app.types.has(&el.element_type, Capability::Resource) {
            for (ws, _) in self.app.variable_users(el).await? {
                out.push((Rel::UsedBy, ws));
            }
        }
        if !el.is_root() {
            for m in self.app.manifests_naming(el).await? {
                out.push((Rel::ReferencedBy, m));
            }
        }
        Ok(out)
    }

    /// The attachments on elements above `el` whose cascade reaches it,
    /// nearest carrier first. Above means containing it (its parent, up to
    /// the circle) or naming it as a manifest member, at any number of
    /// steps.
    pub async fn inherited(&self, el: &Element) -> Result<Vec<Inherited>> {
        if el.is_root() {
            return Ok(Vec::new());
        }
        let cascading = self.app.db.cascading_cached(&el.circle_id).await?;
        if cascading.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(list) = self.app.db.inherited_cached(&el.id) {
            return Ok(list);
        }
        let above = self.app.above(el).await?;
        let mut list: Vec<(usize, Inherited)> = cascading
            .into_iter()
            .filter_map(|(attachment, source)| {
                let (depth, carrier) = above.get(&attachment.element_id)?;
                attachment.cascade.reaches(*depth).then(|| {
                    (
                        *depth,
                        Inherited {
                            attachment,
                            source,
                            carrier: carrier.clone(),
                        },
                    )
                })
            })
            .collect();
        list.sort_by_key(|(d, i)| (*d, i.attachment.priority));
        let list: Vec<Inherited> = list.into_iter().map(|(_, i)| i).collect();
        self.app.db.remember_inherited(&el.id, list.clone());
        Ok(list)
    }
}

impl App {
    /// Manifests of the circle whose `spec.members` name this element.
    pub(in crate::service) async fn manifests_naming(&self, el: &Element) -> Result<Vec<Element>> {
        let all = self.manifests_in(&el.circle_id).await?;
        Ok(all
            .into_iter()
            .filter(|m| members_of(m).contains(&el.slug))
            .collect())
    }

    /// Every manifest (project, app) of a circle.
    async fn manifests_in(&self, circle_id: &CircleId) -> Result<Vec<Element>> {
        let mut out = Vec::new();
        let mut after: Option<ElementId> = None;
        loop {
            let page = self
                .db
                .list_elements(
                    Some(circle_id),
                    &ListFilter {
                        element_type: None,
                        state: None,
                        after_id: after.as_deref(),
                        limit: 500,
                    },
                )
                .await?;
            let done = page.len() < 500;
            after = page.last().map(|e| e.id.clone());
            out.extend(
                page.into_iter()
                    .filter(|m| self.types.has(&m.element_type, Capability::Promote)),
            );
            if done {
                return Ok(out);
            }
        }
    }

    /// The live elements above `el`, each with its fewest steps away.
    async fn above(&self, el: &Element) -> Result<HashMap<ElementId, (usize, Element)>> {
        let manifests = self.manifests_in(&el.circle_id).await?;
        let mut seen: HashMap<ElementId, (usize, Element)> = HashMap::new();
        let mut frontier = vec![el.clone()];
        for depth in 1..=MAX_DEPTH {
            let mut next = Vec::new();
            for x in &frontier {
                let mut ups: Vec<Element> = manifests
                    .iter()
                    .filter(|m| members_of(m).contains(&x.slug))
                    .cloned()
                    .collect();
                ups.extend(self.graph().parent_of(x).await?);
                for up in ups {
                    if up.id == el.id || up.state == State::Deleted || seen.contains_key(&up.id) {
                        continue;
                    }
                    seen.insert(up.id.clone(), (depth, up.clone()));
                    next.push(up);
                }
            }
            if next.is_empty() {
                break;
            }
            frontier = next;
        }
        Ok(seen)
    }
}
