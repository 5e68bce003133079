use jetq::{Producer, Task, TaskContext, TaskOptions, Worker};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct SendEmail {
    to: String,
    subject: String,
}

impl Task for SendEmail {
    const NAME: &'static str = "send_email"; // stable wire name
    const QUEUE: &'static str = "emails";
    fn options() -> TaskOptions {
        TaskOptions::default().max_attempts(5)
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // In the web app: returns once JetStream has stored the task.
    let producer = Producer::from_env()?.connect().await?; // JETQ_NATS_URL, default nats://127.0.0.1:4222
    let email = SendEmail {
        to: "ada@example.com".into(),
        subject: "Welcome".into(),
    };
    producer.enqueue(&email).await?;

    // In the worker: retries with backoff, dead letters, graceful shutdown on SIGTERM.
    Worker::from_env()?
        .handler(|email: SendEmail, _ctx: TaskContext| async move {
            send(&email).await?; // any error is retried with backoff
            Ok(())
        })
        .build()
        .await?
        .run()
        .await;
    Ok(())
}

async fn send(email: &SendEmail) -> std::io::Result<()> {
    println!("to {}: {}", email.to, email.subject);
    Ok(())
}
