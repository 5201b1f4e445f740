//! A stub of the Atlas CMMS backend: `/auth/me`, the agent tool endpoints
//! under `/api/agent/tools/`, and `/actuator/health`, over a small mutable
//! in-memory data set of two companies.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

use crate::record::{RecordedRequest, RequestLog, capture};
use crate::server::Server;
use crate::time::now_iso;
use crate::token::{self, DEFAULT_JWT_SECRET};

/// Company 1 administrator (user id 1, "Alice Admin").
pub const ADMIN: &str = "admin@acme.test";
/// Company 1 technician (user id 2).
pub const TECHNICIAN: &str = "tech@acme.test";
/// Company 1 read-only user (user id 3).
pub const VIEWER: &str = "viewer@acme.test";
/// An administrator without a company (user id 4, `companyId` null).
pub const NO_COMPANY: &str = "nocompany@acme.test";
/// Company 2 administrator (user id 10).
pub const OTHER_ADMIN: &str = "admin@globex.test";

/// Largest `limit` the backend accepts on searches.
pub const MAX_LIMIT: i64 = 50;

#[derive(Clone, Debug)]
pub struct AtlasConfig {
    /// Like the backend's `JWT_SECRET_KEY`: base64 of the HS256 key.
    pub jwt_secret_b64: String,
    /// Added to every request.
    pub latency: Duration,
}

impl Default for AtlasConfig {
    fn default() -> Self {
        Self {
            jwt_secret_b64: DEFAULT_JWT_SECRET.to_owned(),
            latency: Duration::ZERO,
        }
    }
}

/// Handle over the stub's shared state; clones see the same data.
#[derive(Clone)]
pub struct AtlasStub {
    inner: Arc<Inner>,
}

struct Inner {
    key: Vec<u8>,
    latency: Duration,
    healthy: AtomicBool,
    log: RequestLog,
    data: Mutex<Data>,
}

impl AtlasStub {
    /// Panics when `config.jwt_secret_b64` is not base64; see [`AtlasStub::try_new`].
    pub fn new(config: AtlasConfig) -> Self {
        Self::try_new(config).expect("invalid Atlas stub configuration")
    }

    pub fn try_new(config: AtlasConfig) -> anyhow::Result<Self> {
        let key = token::decode_secret(&config.jwt_secret_b64)?;
        Ok(Self {
            inner: Arc::new(Inner {
                key,
                latency: config.latency,
                healthy: AtomicBool::new(true),
                log: RequestLog::default(),
                data: Mutex::new(Data::seed()),
            }),
        })
    }

    /// Every path goes through one handler, so unknown paths and methods are
    /// recorded and answered with JSON like the known ones.
    pub fn router(&self) -> Router {
        Router::new().fallback(handle).with_state(self.clone())
    }

    /// Binds `127.0.0.1:0` and serves a fresh stub in a background task.
    pub async fn spawn(config: AtlasConfig) -> anyhow::Result<SpawnedAtlas> {
        Self::try_new(config)?
            .serve(SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
    }

    /// Serves this stub (its current state) on `addr`.
    pub async fn serve(&self, addr: SocketAddr) -> anyhow::Result<SpawnedAtlas> {
        let server = Server::start(addr, self.router()).await?;
        Ok(SpawnedAtlas {
            stub: self.clone(),
            addr: server.addr(),
            server,
        })
    }

    /// The requests received so far (the latest `record::RECORD_MAX`), in
    /// arrival order, including refused ones.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.log.all()
    }

    pub fn clear_requests(&self) {
        self.inner.log.clear();
    }

    /// Makes `/actuator/health` answer 503 DOWN (false) or 200 UP (true).
    pub fn set_healthy(&self, healthy: bool) {
        self.inner.healthy.store(healthy, Ordering::SeqCst);
    }

    /// A valid token for `email`, signed with this stub's key, valid 1 h.
    pub fn token(&self, email: &str) -> String {
        token::mint_with_key(&self.inner.key, email, 3600)
    }

    /// A token with a chosen lifetime (negative: already expired).
    pub fn token_with_ttl(&self, email: &str, ttl_secs: i64) -> String {
        token::mint_with_key(&self.inner.key, email, ttl_secs)
    }

    /// The current state of a work order of any company, as the details
    /// endpoint would show it, so tests can check what a tool changed.
    pub fn work_order(&self, id_or_code: &str) -> Option<Value> {
        let data = self.data();
        let id = parse_work_order_ref(id_or_code)?;
        data.work_orders.get(&id).map(|wo| data.details_json(wo))
    }

    fn data(&self) -> MutexGuard<'_, Data> {
        self.inner.data.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A stub being served. Dereferences to its [`AtlasStub`].
pub struct SpawnedAtlas {
    pub stub: AtlasStub,
    pub addr: SocketAddr,
    server: Server,
}

impl SpawnedAtlas {
    /// `http://127.0.0.1:PORT`, without a trailing slash (the host's `API_BASE`).
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn is_running(&self) -> bool {
        self.server.is_running()
    }

    /// Stops serving (the port refuses connections) but keeps the state, so
    /// tests can simulate the backend going away and then [`restart`](Self::restart).
    pub async fn stop(&mut self) {
        self.server.stop().await;
    }

    /// Serves again on the same address with the same state.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        let router = self.stub.router();
        self.server.restart(router).await
    }

    pub async fn shutdown(mut self) {
        self.server.stop().await;
    }
}

impl std::ops::Deref for SpawnedAtlas {
    type Target = AtlasStub;
    fn deref(&self) -> &AtlasStub {
        &self.stub
    }
}

// ---------------------------------------------------------------------------
// Data set

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    Admin,
    Technician,
    ViewOnly,
}

impl Role {
    fn json(self) -> Value {
        let (id, code, name) = match self {
            Role::Admin => (1, "ADMIN", "Administrator"),
            Role::Technician => (3, "TECHNICIAN", "Technician"),
            Role::ViewOnly => (5, "VIEW_ONLY", "View only"),
        };
        json!({ "id": id, "code": code, "name": name, "roleType": "ROLE_CLIENT" })
    }
}

#[derive(Clone, Debug)]
struct User {
    id: i64,
    email: &'static str,
    first_name: &'static str,
    last_name: &'static str,
    job_title: &'static str,
    company: Option<i64>,
    role: Role,
}

impl User {
    fn me_json(&self) -> Value {
        json!({
            "id": self.id,
            "email": self.email,
            "firstName": self.first_name,
            "lastName": self.last_name,
            "jobTitle": self.job_title,
            "phone": null,
            "enabled": true,
            "companyId": self.company,
            "role": self.role.json(),
        })
    }

    fn brief_json(&self) -> Value {
        json!({
            "id": self.id,
            "firstName": self.first_name,
            "lastName": self.last_name,
            "email": self.email,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Status {
    Open,
    InProgress,
    OnHold,
    Complete,
}

impl Status {
    fn code(self) -> &'static str {
        match self {
            Status::Open => "OPEN",
            Status::InProgress => "IN_PROGRESS",
            Status::OnHold => "ON_HOLD",
            Status::Complete => "COMPLETE",
        }
    }

    /// Labels as people and models write them: any case, spaces or dashes,
    /// and "Completed" for COMPLETE.
    fn parse(label: &str) -> Option<Self> {
        let norm: String = label
            .trim()
            .chars()
            .map(|c| match c {
                ' ' | '-' => '_',
                c => c.to_ascii_uppercase(),
            })
            .collect();
        match norm.as_str() {
            "OPEN" => Some(Status::Open),
            "IN_PROGRESS" | "INPROGRESS" => Some(Status::InProgress),
            "ON_HOLD" | "ONHOLD" => Some(Status::OnHold),
            "COMPLETE" | "COMPLETED" => Some(Status::Complete),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Priority {
    None,
    Low,
    Medium,
    High,
}

impl Priority {
    fn code(self) -> &'static str {
        match self {
            Priority::None => "NONE",
            Priority::Low => "LOW",
            Priority::Medium => "MEDIUM",
            Priority::High => "HIGH",
        }
    }

    fn parse(label: &str) -> Option<Self> {
        match label.trim().to_ascii_uppercase().as_str() {
            "NONE" => Some(Priority::None),
            "LOW" => Some(Priority::Low),
            "MEDIUM" => Some(Priority::Medium),
            "HIGH" => Some(Priority::High),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
struct Location {
    id: i64,
    company: i64,
    name: &'static str,
}

#[derive(Clone, Debug)]
struct Asset {
    id: i64,
    company: i64,
    name: &'static str,
    status: &'static str,
    location: i64,
    custom_id: &'static str,
    category: (i64, &'static str),
}

#[derive(Clone, Debug)]
struct WorkOrder {
    id: i64,
    company: i64,
    title: String,
    description: Option<String>,
    status: Status,
    priority: Priority,
    asset: Option<i64>,
    location: Option<i64>,
    due_date: Option<String>,
    created_at: String,
    updated_at: String,
    estimated_start_date: Option<String>,
    estimated_duration_hours: Option<f64>,
    require_signature: bool,
    team: Option<i64>,
    category: Option<i64>,
    primary_user: Option<i64>,
    assigned_to: Vec<i64>,
    tasks: Vec<Value>,
    labor: Vec<Value>,
    history: Vec<Value>,
    files: Vec<Value>,
}

impl WorkOrder {
    fn code(&self) -> String {
        work_order_code(self.id)
    }
}

fn work_order_code(id: i64) -> String {
    format!("WO{id:06}")
}

/// `101`, `WO000101` or `wo101` to an id.
fn parse_work_order_ref(s: &str) -> Option<i64> {
    let s = s.trim();
    let digits = match s.get(..2) {
        Some(p) if p.eq_ignore_ascii_case("wo") => &s[2..],
        _ => s,
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

struct Data {
    users: Vec<User>,
    locations: Vec<Location>,
    assets: Vec<Asset>,
    work_orders: BTreeMap<i64, WorkOrder>,
    next_id: i64,
    next_entry_id: i64,
}

struct SeedWo {
    id: i64,
    company: i64,
    title: &'static str,
    description: &'static str,
    status: Status,
    priority: Priority,
    asset: Option<i64>,
    location: i64,
    due: &'static str,
    created: &'static str,
    updated: &'static str,
    primary: Option<i64>,
    assigned: &'static [i64],
    tasks: &'static [&'static str],
}

impl Data {
    fn seed() -> Self {
        let user = |id, email, first_name, last_name, job_title, company, role| User {
            id,
            email,
            first_name,
            last_name,
            job_title,
            company,
            role,
        };
        let users = vec![
            user(
                1,
                ADMIN,
                "Alice",
                "Admin",
                "Maintenance Manager",
                Some(1),
                Role::Admin,
            ),
            user(
                2,
                TECHNICIAN,
                "Tom",
                "Tech",
                "Technician",
                Some(1),
                Role::Technician,
            ),
            user(
                3,
                VIEWER,
                "Vic",
                "Viewer",
                "Auditor",
                Some(1),
                Role::ViewOnly,
            ),
            user(
                4,
                NO_COMPANY,
                "Nora",
                "Nobody",
                "Administrator",
                None,
                Role::Admin,
            ),
            user(
                10,
                OTHER_ADMIN,
                "Gus",
                "Globex",
                "Plant Manager",
                Some(2),
                Role::Admin,
            ),
        ];
        let locations = vec![
            Location {
                id: 1,
                company: 1,
                name: "Main Plant",
            },
            Location {
                id: 2,
                company: 1,
                name: "Boiler Room",
            },
            Location {
                id: 3,
                company: 1,
                name: "Roof",
            },
            Location {
                id: 4,
                company: 1,
                name: "Warehouse",
            },
            Location {
                id: 5,
                company: 2,
                name: "Globex Factory",
            },
        ];
        let asset = |id, company, name, status, location, custom_id, category| Asset {
            id,
            company,
            name,
            status,
            location,
            custom_id,
            category,
        };
        let assets = vec![
            asset(
                11,
                1,
                "Conveyor Belt A",
                "OPERATIONAL",
                1,
                "A-0011",
                (1, "Conveyors"),
            ),
            asset(
                12,
                1,
                "Boiler #2",
                "INSPECTION_SCHEDULED",
                2,
                "A-0012",
                (2, "Boilers"),
            ),
            asset(13, 1, "Water Pump P-3", "DOWN", 2, "A-0013", (3, "Pumps")),
            asset(
                14,
                1,
                "Rooftop HVAC Unit",
                "MODERNIZATION",
                3,
                "A-0014",
                (4, "HVAC"),
            ),
            asset(
                15,
                1,
                "Air Compressor C-1",
                "STANDBY",
                1,
                "A-0015",
                (5, "Compressors"),
            ),
            asset(
                16,
                1,
                "Forklift FL-2",
                "COMMISSIONING",
                4,
                "A-0016",
                (6, "Vehicles"),
            ),
            asset(
                17,
                1,
                "Cooling Tower CT-1",
                "EMERGENCY_SHUTDOWN",
                3,
                "A-0017",
                (4, "HVAC"),
            ),
            asset(
                21,
                2,
                "Industrial Scale S-1",
                "OPERATIONAL",
                5,
                "G-0021",
                (7, "Scales"),
            ),
            asset(
                22,
                2,
                "Packaging Line PL-1",
                "DOWN",
                5,
                "G-0022",
                (8, "Packaging"),
            ),
        ];
        let seeds = [
            SeedWo {
                id: 101,
                company: 1,
                title: "Replace conveyor belt",
                description: "The belt on conveyor A is frayed and slipping under load.",
                status: Status::Open,
                priority: Priority::High,
                asset: Some(11),
                location: 1,
                due: "2026-06-05T17:00:00Z",
                created: "2026-04-20T08:00:00Z",
                updated: "2026-05-02T09:30:00Z",
                primary: Some(2),
                assigned: &[2],
                tasks: &[
                    "Lock out the conveyor",
                    "Fit the new belt",
                    "Test run for 10 minutes",
                ],
            },
            SeedWo {
                id: 102,
                company: 1,
                title: "Inspect boiler pressure valve",
                description: "Yearly inspection of the relief valve on boiler #2.",
                status: Status::InProgress,
                priority: Priority::Medium,
                asset: Some(12),
                location: 2,
                due: "2026-05-28T12:00:00Z",
                created: "2026-04-22T10:00:00Z",
                updated: "2026-05-06T14:00:00Z",
                primary: Some(2),
                assigned: &[2],
                tasks: &["Check set pressure", "Record readings"],
            },
            SeedWo {
                id: 103,
                company: 1,
                title: "Lubricate pump bearings",
                description: "Grease both bearings on pump P-3.",
                status: Status::Complete,
                priority: Priority::Low,
                asset: Some(13),
                location: 2,
                due: "2026-04-30T17:00:00Z",
                created: "2026-04-10T07:30:00Z",
                updated: "2026-04-29T16:45:00Z",
                primary: Some(2),
                assigned: &[2],
                tasks: &["Grease drive-end bearing", "Grease non-drive-end bearing"],
            },
            SeedWo {
                id: 104,
                company: 1,
                title: "Repair HVAC unit",
                description: "Compressor fault on the rooftop unit; waiting for parts.",
                status: Status::OnHold,
                priority: Priority::None,
                asset: Some(14),
                location: 3,
                due: "2026-06-20T17:00:00Z",
                created: "2026-04-25T09:00:00Z",
                updated: "2026-05-04T11:15:00Z",
                primary: Some(1),
                assigned: &[2],
                tasks: &["Order replacement compressor"],
            },
            SeedWo {
                id: 121,
                company: 1,
                title: "Replace air filter on compressor C-1",
                description: "Filter is due after 2000 running hours.",
                status: Status::Open,
                priority: Priority::Low,
                asset: Some(15),
                location: 1,
                due: "2026-06-10T17:00:00Z",
                created: "2026-04-28T08:00:00Z",
                updated: "2026-05-01T08:00:00Z",
                primary: None,
                assigned: &[],
                tasks: &[],
            },
            SeedWo {
                id: 122,
                company: 1,
                title: "Check fire extinguishers",
                description: "Monthly check of every extinguisher in the warehouse.",
                status: Status::Open,
                priority: Priority::Medium,
                asset: None,
                location: 4,
                due: "2026-05-31T17:00:00Z",
                created: "2026-04-29T08:00:00Z",
                updated: "2026-05-03T10:00:00Z",
                primary: Some(2),
                assigned: &[2],
                tasks: &["Check pressure gauges", "Sign the tags"],
            },
            SeedWo {
                id: 123,
                company: 1,
                title: "Service forklift FL-2 hydraulics",
                description: "Mast drifts down when loaded; check seals and fluid.",
                status: Status::Open,
                priority: Priority::High,
                asset: Some(16),
                location: 4,
                due: "2026-06-01T17:00:00Z",
                created: "2026-04-30T08:00:00Z",
                updated: "2026-05-05T15:20:00Z",
                primary: None,
                assigned: &[],
                tasks: &[],
            },
            SeedWo {
                id: 124,
                company: 1,
                title: "Clean cooling tower basin",
                description: "Remove sludge and check the makeup water valve.",
                status: Status::Open,
                priority: Priority::Medium,
                asset: Some(17),
                location: 3,
                due: "2026-06-15T17:00:00Z",
                created: "2026-04-18T08:00:00Z",
                updated: "2026-04-30T13:00:00Z",
                primary: None,
                assigned: &[],
                tasks: &[],
            },
            SeedWo {
                id: 125,
                company: 1,
                title: "Test emergency lighting",
                description: "Quarterly 30-minute discharge test.",
                status: Status::Open,
                priority: Priority::Low,
                asset: None,
                location: 1,
                due: "2026-07-01T17:00:00Z",
                created: "2026-04-15T08:00:00Z",
                updated: "2026-04-27T09:00:00Z",
                primary: None,
                assigned: &[],
                tasks: &[],
            },
            SeedWo {
                id: 126,
                company: 1,
                title: "Align conveyor rollers",
                description: "Belt tracks to the left after the last repair.",
                status: Status::InProgress,
                priority: Priority::Low,
                asset: Some(11),
                location: 1,
                due: "2026-06-08T17:00:00Z",
                created: "2026-05-01T08:00:00Z",
                updated: "2026-05-07T07:45:00Z",
                primary: Some(2),
                assigned: &[2],
                tasks: &[],
            },
            SeedWo {
                id: 127,
                company: 1,
                title: "Replace boiler gauge glass",
                description: "Cracked sight glass on boiler #2.",
                status: Status::Complete,
                priority: Priority::Medium,
                asset: Some(12),
                location: 2,
                due: "2026-04-20T17:00:00Z",
                created: "2026-04-12T08:00:00Z",
                updated: "2026-04-21T12:00:00Z",
                primary: Some(2),
                assigned: &[2],
                tasks: &[],
            },
            SeedWo {
                id: 201,
                company: 2,
                title: "Calibrate scale",
                description: "Calibrate the industrial scale against test weights.",
                status: Status::Open,
                priority: Priority::Medium,
                asset: Some(21),
                location: 5,
                due: "2026-06-03T17:00:00Z",
                created: "2026-04-26T08:00:00Z",
                updated: "2026-05-05T12:00:00Z",
                primary: Some(10),
                assigned: &[10],
                tasks: &["Zero the scale", "Check with 50 kg weights"],
            },
        ];
        let mut data = Data {
            users,
            locations,
            assets,
            work_orders: BTreeMap::new(),
            next_id: 105,
            next_entry_id: 1000,
        };
        for s in seeds {
            let creator = s.primary.unwrap_or(if s.company == 1 { 1 } else { 10 });
            let mut wo = WorkOrder {
                id: s.id,
                company: s.company,
                title: s.title.to_owned(),
                description: Some(s.description.to_owned()),
                status: s.status,
                priority: s.priority,
                asset: s.asset,
                location: Some(s.location),
                due_date: Some(s.due.to_owned()),
                created_at: s.created.to_owned(),
                updated_at: s.updated.to_owned(),
                estimated_start_date: None,
                estimated_duration_hours: None,
                require_signature: false,
                team: None,
                category: None,
                primary_user: s.primary,
                assigned_to: s.assigned.to_vec(),
                tasks: Vec::new(),
                labor: Vec::new(),
                history: Vec::new(),
                files: Vec::new(),
            };
            let done = s.status == Status::Complete;
            for label in s.tasks {
                let id = data.entry_id();
                wo.tasks.push(json!({
                    "id": id, "label": label, "type": "SUBTASK",
                    "value": if done { "COMPLETE" } else { "OPEN" }, "notes": null,
                }));
            }
            let created_entry = data.history_entry(creator, "Work order created", s.created);
            wo.history.push(created_entry);
            if s.status != Status::Open {
                let entry = data.history_entry(
                    creator,
                    &format!("Status changed to {}", s.status.code()),
                    s.updated,
                );
                wo.history.push(entry);
                let id = data.entry_id();
                wo.labor.push(json!({
                    "id": id,
                    "user": data.user_by_id(creator).map(User::brief_json),
                    "startedAt": s.created,
                    "duration": 5400,
                    "hourlyRate": 45.0,
                    "status": "STOPPED",
                }));
            }
            if s.id == 101 {
                let id = data.entry_id();
                wo.files.push(json!({
                    "id": id, "name": "belt-spec.pdf", "type": "OTHER",
                    "url": "/files/belt-spec.pdf",
                }));
            }
            data.work_orders.insert(wo.id, wo);
        }
        data
    }

    fn entry_id(&mut self) -> i64 {
        self.next_entry_id += 1;
        self.next_entry_id
    }

    fn history_entry(&mut self, user: i64, name: &str, at: &str) -> Value {
        let id = self.entry_id();
        json!({
            "id": id,
            "name": name,
            "user": self.user_by_id(user).map(User::brief_json),
            "createdAt": at,
        })
    }

    fn user_by_email(&self, email: &str) -> Option<&User> {
        self.users
            .iter()
            .find(|u| u.email.eq_ignore_ascii_case(email))
    }

    fn user_by_id(&self, id: i64) -> Option<&User> {
        self.users.iter().find(|u| u.id == id)
    }

    fn location_json(&self, id: Option<i64>) -> Value {
        id.and_then(|id| self.locations.iter().find(|l| l.id == id))
            .map(|l| json!({ "id": l.id, "name": l.name }))
            .unwrap_or(Value::Null)
    }

    fn asset_brief(&self, id: Option<i64>) -> Value {
        id.and_then(|id| self.assets.iter().find(|a| a.id == id))
            .map(|a| json!({ "id": a.id, "name": a.name }))
            .unwrap_or(Value::Null)
    }

    fn asset_json(&self, a: &Asset) -> Value {
        json!({
            "id": a.id,
            "name": a.name,
            "status": a.status,
            "location": self.location_json(Some(a.location)),
            "customId": a.custom_id,
            "category": { "id": a.category.0, "name": a.category.1 },
        })
    }

    fn summary_json(&self, wo: &WorkOrder) -> Value {
        json!({
            "id": wo.id,
            "code": wo.code(),
            "title": wo.title,
            "status": wo.status.code(),
            "priority": wo.priority.code(),
            "asset": self.asset_brief(wo.asset),
            "location": self.location_json(wo.location),
            "dueDate": wo.due_date,
            "updatedAt": wo.updated_at,
        })
    }

    fn details_json(&self, wo: &WorkOrder) -> Value {
        let person = |id: i64| self.user_by_id(id).map(User::brief_json);
        json!({
            "id": wo.id,
            "code": wo.code(),
            "title": wo.title,
            "description": wo.description,
            "status": wo.status.code(),
            "priority": wo.priority.code(),
            "asset": self.asset_brief(wo.asset),
            "location": self.location_json(wo.location),
            "dueDate": wo.due_date,
            "createdAt": wo.created_at,
            "updatedAt": wo.updated_at,
            "estimatedStartDate": wo.estimated_start_date,
            "estimatedDurationHours": wo.estimated_duration_hours,
            "requireSignature": wo.require_signature,
            "teamId": wo.team,
            "categoryId": wo.category,
            "tasks": wo.tasks,
            "labor": wo.labor,
            "history": wo.history,
            "files": wo.files,
            "people": {
                "primaryUser": wo.primary_user.and_then(person),
                "assignedTo": wo.assigned_to.iter().filter_map(|id| person(*id)).collect::<Vec<_>>(),
            },
        })
    }

    /// A work order of `company` by path reference; other companies' are invisible.
    fn find_own(&self, company: i64, reference: &str) -> Option<&WorkOrder> {
        let id = parse_work_order_ref(reference)?;
        self.work_orders.get(&id).filter(|wo| wo.company == company)
    }

    fn allocate_work_order_id(&mut self) -> i64 {
        while self.work_orders.contains_key(&self.next_id) {
            self.next_id += 1;
        }
        let id = self.next_id;
        self.next_id += 1;
        id
    }
}

// ---------------------------------------------------------------------------
// HTTP

type ApiResult = Result<(StatusCode, Value), ApiError>;

struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    fn not_found_work_order() -> Self {
        Self::new(StatusCode::NOT_FOUND, "Work order not found")
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(json!({ "success": false, "message": self.message })),
        )
            .into_response()
    }
}

async fn handle(State(stub): State<AtlasStub>, req: Request) -> Response {
    let (parts, body) = capture(&stub.inner.log, req).await;
    if !stub.inner.latency.is_zero() {
        tokio::time::sleep(stub.inner.latency).await;
    }
    let Some(body) = body else {
        return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "Request body too large")
            .into_response();
    };
    match route(
        &stub,
        &parts.method,
        parts.uri.path(),
        &parts.headers,
        &body,
    ) {
        Ok((status, value)) => (status, axum::Json(value)).into_response(),
        Err(e) => e.into_response(),
    }
}

fn route(
    stub: &AtlasStub,
    method: &Method,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> ApiResult {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match (method, segments.as_slice()) {
        (&Method::GET, ["actuator", "health"]) => Ok(health(stub)),
        (&Method::GET, ["auth", "me"]) => {
            let user = authenticate(stub, headers)?;
            Ok((StatusCode::OK, user.me_json()))
        }
        (_, ["api", ..]) => {
            // As behind the backend's security filter: authenticate before routing.
            let user = authenticate(stub, headers)?;
            tool_route(stub, &user, method, &segments[1..], body)
        }
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, "Not found")),
    }
}

fn health(stub: &AtlasStub) -> (StatusCode, Value) {
    if stub.inner.healthy.load(Ordering::SeqCst) {
        (StatusCode::OK, json!({ "status": "UP" }))
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, json!({ "status": "DOWN" }))
    }
}

/// The backend's checks: no bearer token is 403, a token it cannot verify
/// is 500 (its filter throws), an unknown subject is 403.
fn authenticate(stub: &AtlasStub, headers: &HeaderMap) -> Result<User, ApiError> {
    let denied = || ApiError::new(StatusCode::FORBIDDEN, "Access Denied");
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(denied)?;
    let token = header
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(denied)?;
    let claims = token::verify_with_key(&stub.inner.key, token).map_err(|_| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Expired or invalid JWT token",
        )
    })?;
    stub.data()
        .user_by_email(&claims.sub)
        .cloned()
        .ok_or_else(denied)
}

fn tool_route(
    stub: &AtlasStub,
    user: &User,
    method: &Method,
    segments: &[&str],
    body: &[u8],
) -> ApiResult {
    let (&Method::POST, ["agent", "tools", rest @ ..]) = (method, segments) else {
        return Err(ApiError::new(StatusCode::NOT_FOUND, "Not found"));
    };
    let Some(company) = user.company else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "User is not attached to a company",
        ));
    };
    let body = parse_body(body)?;
    let mut data = stub.data();
    match rest {
        ["work-orders", "search"] => search_work_orders(&data, company, &body),
        ["work-orders", "create"] => create_work_order(&mut data, user, company, &body),
        ["work-orders", reference, "details"] => {
            let reference = decode_segment(reference);
            let wo = data
                .find_own(company, &reference)
                .ok_or_else(ApiError::not_found_work_order)?;
            Ok((StatusCode::OK, data.details_json(wo)))
        }
        ["work-orders", reference, "update"] => {
            let reference = decode_segment(reference);
            update_work_order(&mut data, user, company, &reference, &body)
        }
        ["assets", "search"] => search_assets(&data, company, &body),
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, "Not found")),
    }
}

fn decode_segment(raw: &str) -> String {
    percent_encoding::percent_decode_str(raw)
        .decode_utf8_lossy()
        .into_owned()
}

/// An empty body counts as `{}`; anything but a JSON object is a 400.
fn parse_body(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(ApiError::bad_request("Invalid request body")),
    }
}

// Field readers: lenient like the backend's JSON binding (numeric strings
// are numbers, null is absent), strict about real type mismatches.

fn opt_i64(body: &Map<String, Value>, key: &str) -> Result<Option<i64>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(Some)
            .ok_or_else(|| ApiError::bad_request(format!("Invalid value for {key}"))),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("Invalid value for {key}"))),
        Some(_) => Err(ApiError::bad_request(format!("Invalid value for {key}"))),
    }
}

fn opt_f64(body: &Map<String, Value>, key: &str) -> Result<Option<f64>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(Value::String(s)) => s
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("Invalid value for {key}"))),
        Some(_) => Err(ApiError::bad_request(format!("Invalid value for {key}"))),
    }
}

fn opt_bool(body: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::bad_request(format!("Invalid value for {key}"))),
    }
}

fn opt_str(body: &Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ApiError::bad_request(format!("Invalid value for {key}"))),
    }
}

/// An array of strings; a lone string is taken as a one-element list.
fn opt_str_list(body: &Map<String, Value>, key: &str) -> Result<Option<Vec<String>>, ApiError> {
    let invalid = || ApiError::bad_request(format!("Invalid value for {key}"));
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(vec![s.clone()])),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_owned).ok_or_else(invalid))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(invalid()),
    }
}

fn opt_i64_list(body: &Map<String, Value>, key: &str) -> Result<Option<Vec<i64>>, ApiError> {
    let invalid = || ApiError::bad_request(format!("Invalid value for {key}"));
    match body.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::Number(n) => n.as_i64().ok_or_else(invalid),
                Value::String(s) => s.trim().parse().map_err(|_| invalid()),
                _ => Err(invalid()),
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(invalid()),
    }
}

fn limit(body: &Map<String, Value>) -> Result<usize, ApiError> {
    let limit = opt_i64(body, "limit")?.unwrap_or(5);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    Ok(limit as usize)
}

/// A bare date means the start of that day, so it compares with the
/// fixtures' `YYYY-MM-DDTHH:MM:SSZ` strings.
fn date_bound(body: &Map<String, Value>, key: &str) -> Result<Option<String>, ApiError> {
    Ok(opt_str(body, key)?.map(|s| {
        let s = s.trim().to_owned();
        if s.len() == 10 {
            format!("{s}T00:00:00Z")
        } else {
            s
        }
    }))
}

fn search_work_orders(data: &Data, company: i64, body: &Map<String, Value>) -> ApiResult {
    let limit = limit(body)?;
    // An empty list filters nothing, like an absent one.
    let statuses = opt_str_list(body, "statuses")?
        .filter(|l| !l.is_empty())
        .map(|list| {
            list.iter()
                .map(|s| {
                    Status::parse(s)
                        .ok_or_else(|| ApiError::bad_request(format!("Invalid status: {s}")))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let priorities = opt_str_list(body, "priorities")?
        .filter(|l| !l.is_empty())
        .map(|list| {
            list.iter()
                .map(|s| {
                    Priority::parse(s)
                        .ok_or_else(|| ApiError::bad_request(format!("Invalid priority: {s}")))
                })
                .collect::<Result<Vec<_>, _>>()
        })
        .transpose()?;
    let search = opt_str(body, "search")?
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty());
    let bounds = [
        ("dueDateBefore", "dueDateAfter"),
        ("createdAtBefore", "createdAtAfter"),
        ("updatedAtBefore", "updatedAtAfter"),
    ]
    .map(|(b, a)| Ok::<_, ApiError>((date_bound(body, b)?, date_bound(body, a)?)));
    let [due, created, updated] = bounds;
    let (due, created, updated) = (due?, created?, updated?);
    let assigned = opt_i64(body, "assignedToUserId")?;
    let primary = opt_i64(body, "primaryUserId")?;
    let team = opt_i64(body, "teamId")?;
    let asset = opt_i64(body, "assetId")?;
    let location = opt_i64(body, "locationId")?;
    let category = opt_i64(body, "categoryId")?;
    let sort_by = opt_str(body, "sortBy")?.unwrap_or_else(|| "updatedAt".to_owned());
    let descending = match opt_str(body, "sortDirection")? {
        None => true,
        Some(d) if d.eq_ignore_ascii_case("desc") => true,
        Some(d) if d.eq_ignore_ascii_case("asc") => false,
        Some(d) => return Err(ApiError::bad_request(format!("Invalid sortDirection: {d}"))),
    };

    let in_range = |value: Option<&str>, (before, after): &(Option<String>, Option<String>)| {
        if before.is_none() && after.is_none() {
            return true;
        }
        let Some(v) = value else { return false };
        before.as_deref().is_none_or(|b| v < b) && after.as_deref().is_none_or(|a| v > a)
    };

    let mut hits: Vec<&WorkOrder> = data
        .work_orders
        .values()
        .filter(|wo| wo.company == company)
        .filter(|wo| statuses.as_ref().is_none_or(|s| s.contains(&wo.status)))
        .filter(|wo| priorities.as_ref().is_none_or(|p| p.contains(&wo.priority)))
        .filter(|wo| {
            search.as_ref().is_none_or(|q| {
                wo.title.to_lowercase().contains(q)
                    || wo.code().to_lowercase().contains(q)
                    || wo
                        .description
                        .as_deref()
                        .is_some_and(|d| d.to_lowercase().contains(q))
            })
        })
        .filter(|wo| in_range(wo.due_date.as_deref(), &due))
        .filter(|wo| in_range(Some(&wo.created_at), &created))
        .filter(|wo| in_range(Some(&wo.updated_at), &updated))
        .filter(|wo| assigned.is_none_or(|u| wo.assigned_to.contains(&u)))
        .filter(|wo| primary.is_none_or(|u| wo.primary_user == Some(u)))
        .filter(|wo| team.is_none_or(|t| wo.team == Some(t)))
        .filter(|wo| asset.is_none_or(|a| wo.asset == Some(a)))
        .filter(|wo| location.is_none_or(|l| wo.location == Some(l)))
        .filter(|wo| category.is_none_or(|c| wo.category == Some(c)))
        .collect();

    type Cmp = fn(&WorkOrder, &WorkOrder) -> std::cmp::Ordering;
    let cmp: Cmp = match sort_by.as_str() {
        "updatedAt" => |a, b| a.updated_at.cmp(&b.updated_at),
        "createdAt" => |a, b| a.created_at.cmp(&b.created_at),
        "priority" => |a, b| a.priority.cmp(&b.priority),
        "status" => |a, b| a.status.cmp(&b.status),
        "dueDate" => |a, b| a.due_date.cmp(&b.due_date),
        other => return Err(ApiError::bad_request(format!("Invalid sortBy: {other}"))),
    };
    hits.sort_by(|a, b| {
        // Work orders without a due date go last either way.
        if sort_by == "dueDate" && a.due_date.is_none() != b.due_date.is_none() {
            return a.due_date.is_none().cmp(&b.due_date.is_none());
        }
        let primary = if descending { cmp(b, a) } else { cmp(a, b) };
        primary.then(a.id.cmp(&b.id))
    });
    let total = hits.len();
    let results: Vec<Value> = hits
        .into_iter()
        .take(limit)
        .map(|wo| data.summary_json(wo))
        .collect();
    Ok((
        StatusCode::OK,
        json!({ "results": results, "total": total }),
    ))
}

fn search_assets(data: &Data, company: i64, body: &Map<String, Value>) -> ApiResult {
    let limit = limit(body)?;
    let search = opt_str(body, "search")?
        .map(|s| s.trim().to_lowercase())
        .filter(|s| !s.is_empty());
    let hits: Vec<&Asset> = data
        .assets
        .iter()
        .filter(|a| a.company == company)
        .filter(|a| {
            search.as_ref().is_none_or(|q| {
                a.name.to_lowercase().contains(q) || a.custom_id.to_lowercase().contains(q)
            })
        })
        .collect();
    let total = hits.len();
    let results: Vec<Value> = hits
        .into_iter()
        .take(limit)
        .map(|a| data.asset_json(a))
        .collect();
    Ok((
        StatusCode::OK,
        json!({ "results": results, "total": total }),
    ))
}

fn require_writer(user: &User, action: &str) -> Result<(), ApiError> {
    if user.role == Role::ViewOnly {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!("You do not have permission to {action} work orders"),
        ));
    }
    Ok(())
}

/// The writable fields, in the order `updatedFields` reports them.
const WRITABLE: &[&str] = &[
    "title",
    "description",
    "priority",
    "status",
    "dueDate",
    "estimatedStartDate",
    "estimatedDurationHours",
    "requireSignature",
    "locationId",
    "assetId",
    "teamId",
    "primaryUserId",
    "categoryId",
    "assignedUserIds",
];

/// Applies the writable fields present in `body` to `wo`, checking that
/// referenced assets, locations and people belong to the same company.
fn apply_fields(
    data: &Data,
    wo: &mut WorkOrder,
    body: &Map<String, Value>,
) -> Result<Vec<String>, ApiError> {
    let mut changed = Vec::new();
    for &field in WRITABLE {
        if !body.contains_key(field) {
            continue;
        }
        match field {
            "title" => {
                let title = opt_str(body, field)?.unwrap_or_default();
                let title = title.trim();
                if title.is_empty() {
                    return Err(ApiError::bad_request("Title is required"));
                }
                wo.title = title.to_owned();
            }
            "description" => wo.description = opt_str(body, field)?,
            "priority" => {
                wo.priority = match opt_str(body, field)? {
                    None => Priority::None,
                    Some(p) => Priority::parse(&p)
                        .ok_or_else(|| ApiError::bad_request(format!("Invalid priority: {p}")))?,
                }
            }
            "status" => {
                let s = opt_str(body, field)?.unwrap_or_default();
                wo.status = Status::parse(&s)
                    .ok_or_else(|| ApiError::bad_request(format!("Invalid status: {s}")))?;
            }
            "dueDate" => wo.due_date = opt_str(body, field)?,
            "estimatedStartDate" => wo.estimated_start_date = opt_str(body, field)?,
            "estimatedDurationHours" => wo.estimated_duration_hours = opt_f64(body, field)?,
            "requireSignature" => wo.require_signature = opt_bool(body, field)?.unwrap_or(false),
            "locationId" => {
                let id = opt_i64(body, field)?;
                if let Some(id) = id
                    && !data
                        .locations
                        .iter()
                        .any(|l| l.id == id && l.company == wo.company)
                {
                    return Err(ApiError::bad_request("Location not found"));
                }
                wo.location = id;
            }
            "assetId" => {
                let id = opt_i64(body, field)?;
                if let Some(id) = id {
                    let asset = data
                        .assets
                        .iter()
                        .find(|a| a.id == id && a.company == wo.company)
                        .ok_or_else(|| ApiError::bad_request("Asset not found"))?;
                    if !body.contains_key("locationId") {
                        wo.location = Some(asset.location);
                    }
                }
                wo.asset = id;
            }
            "teamId" => wo.team = opt_i64(body, field)?,
            "categoryId" => wo.category = opt_i64(body, field)?,
            "primaryUserId" => {
                let id = opt_i64(body, field)?;
                if let Some(id) = id {
                    check_colleague(data, wo.company, id)?;
                }
                wo.primary_user = id;
            }
            "assignedUserIds" => {
                let ids = opt_i64_list(body, field)?.unwrap_or_default();
                for id in &ids {
                    check_colleague(data, wo.company, *id)?;
                }
                wo.assigned_to = ids;
            }
            _ => unreachable!("every writable field is handled"),
        }
        changed.push(field.to_owned());
    }
    Ok(changed)
}

fn check_colleague(data: &Data, company: i64, user_id: i64) -> Result<(), ApiError> {
    match data.user_by_id(user_id) {
        Some(u) if u.company == Some(company) => Ok(()),
        _ => Err(ApiError::bad_request(format!("User {user_id} not found"))),
    }
}

fn create_work_order(
    data: &mut Data,
    user: &User,
    company: i64,
    body: &Map<String, Value>,
) -> ApiResult {
    require_writer(user, "create")?;
    if opt_str(body, "title")?.is_none_or(|t| t.trim().is_empty()) {
        return Err(ApiError::bad_request("Title is required"));
    }
    let now = now_iso();
    let mut wo = WorkOrder {
        id: 0,
        company,
        title: String::new(),
        description: None,
        status: Status::Open,
        priority: Priority::None,
        asset: None,
        location: None,
        due_date: None,
        created_at: now.clone(),
        updated_at: now.clone(),
        estimated_start_date: None,
        estimated_duration_hours: None,
        require_signature: false,
        team: None,
        category: None,
        primary_user: None,
        assigned_to: Vec::new(),
        tasks: Vec::new(),
        labor: Vec::new(),
        history: Vec::new(),
        files: Vec::new(),
    };
    // Creation never takes a status from the caller.
    let mut fields = body.clone();
    fields.remove("status");
    apply_fields(data, &mut wo, &fields)?;
    wo.id = data.allocate_work_order_id();
    let entry = data.history_entry(user.id, "Work order created", &now);
    wo.history.push(entry);
    let code = wo.code();
    let summary = json!({
        "id": wo.id,
        "code": code,
        "title": wo.title,
        "status": wo.status.code(),
        "priority": wo.priority.code(),
        "createdAt": wo.created_at,
    });
    data.work_orders.insert(wo.id, wo);
    Ok((
        StatusCode::OK,
        json!({ "success": true, "workOrder": summary, "message": format!("Work order {code} created") }),
    ))
}

fn update_work_order(
    data: &mut Data,
    user: &User,
    company: i64,
    reference: &str,
    body: &Map<String, Value>,
) -> ApiResult {
    require_writer(user, "update")?;
    let mut wo = data
        .find_own(company, reference)
        .cloned()
        .ok_or_else(ApiError::not_found_work_order)?;
    let changed = apply_fields(data, &mut wo, body)?;
    if changed.is_empty() {
        return Err(ApiError::bad_request("No fields to update"));
    }
    let now = now_iso();
    wo.updated_at = now.clone();
    let entry = data.history_entry(
        user.id,
        &format!("Work order updated: {}", changed.join(", ")),
        &now,
    );
    wo.history.push(entry);
    let code = wo.code();
    let summary = json!({
        "id": wo.id,
        "code": code,
        "title": wo.title,
        "description": wo.description,
        "status": wo.status.code(),
        "priority": wo.priority.code(),
        "dueDate": wo.due_date,
        "createdAt": wo.created_at,
        "updatedAt": wo.updated_at,
    });
    data.work_orders.insert(wo.id, wo);
    Ok((
        StatusCode::OK,
        json!({
            "success": true,
            "workOrder": summary,
            "message": format!("Work order {code} updated"),
            "updatedFields": changed,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_order_references() {
        assert_eq!(parse_work_order_ref("101"), Some(101));
        assert_eq!(parse_work_order_ref("WO000101"), Some(101));
        assert_eq!(parse_work_order_ref("wo000101"), Some(101));
        assert_eq!(parse_work_order_ref(".."), None);
        assert_eq!(parse_work_order_ref("WO"), None);
        assert_eq!(parse_work_order_ref("101?x=1"), None);
    }

    #[test]
    fn status_labels() {
        assert_eq!(Status::parse("Completed"), Some(Status::Complete));
        assert_eq!(Status::parse("in progress"), Some(Status::InProgress));
        assert_eq!(Status::parse("On-Hold"), Some(Status::OnHold));
        assert_eq!(Status::parse("closed"), None);
    }

    #[test]
    fn seed_has_enough_open_work() {
        let data = Data::seed();
        let open = data
            .work_orders
            .values()
            .filter(|w| w.company == 1 && w.status != Status::Complete)
            .count();
        assert!(open >= 8, "only {open} non-complete work orders");
    }
}
