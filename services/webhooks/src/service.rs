//! The webhooks service's state: its store, how deliveries are made, and
//! the signal that wakes the dispatcher when new deliveries are recorded.

use prometheus_client::metrics::counter::Counter;
use tokio::sync::Notify;

use crate::deliver::DeliverySettings;
use crate::store::WebhooksStore;

pub struct Webhooks {
    store: WebhooksStore,
    settings: DeliverySettings,
    wake: Notify,
    /// Attempts made by this process that the endpoint accepted, and that failed.
    pub delivered: Counter,
    pub failed: Counter,
}

impl Webhooks {
    pub fn new(store: WebhooksStore, settings: DeliverySettings) -> Self {
        Self { store, settings, wake: Notify::new(), delivered: Counter::default(), failed: Counter::default() }
    }

    pub fn store(&self) -> &WebhooksStore {
        &self.store
    }

    pub fn settings(&self) -> &DeliverySettings {
        &self.settings
    }

    /// Tells the dispatcher that deliveries may be due.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Resolves when [`Self::wake`] was called.
    pub async fn woken(&self) {
        self.wake.notified().await;
    }

    pub fn count_attempt(&self, delivered: bool) {
        if delivered { &self.delivered } else { &self.failed }.inc();
    }
}
