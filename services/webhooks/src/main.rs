fn main() -> std::process::ExitCode {
    loyalty_common::server::main::<loyalty_webhooks::WebhooksServer>()
}
