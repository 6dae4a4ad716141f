//! The embedded model: GGUF files run in-process with llama.cpp.
//!
//! Each configured model gets one worker thread, started on the model's first use. The worker
//! loads the GGUF, keeps it and one llama.cpp context for the life of the provider, and serves
//! requests one at a time: llama.cpp inference is CPU-bound, so running two generations of the
//! same model side by side would only make both slower. The worker also remembers the tokens
//! already in its KV cache and re-uses the common prefix of the next prompt, which in an agent
//! loop (where each call repeats the previous conversation) skips most of the prompt work.

mod grammar;
mod output;
mod prompt;

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, mpsc as std_mpsc};
use std::time::Instant;

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::{LlamaChatMessage, LlamaChatTemplate, LlamaModel};
use llama_cpp_2::sampling::LlamaSampler;
use llama_cpp_2::token::LlamaToken;
use tokio::sync::{mpsc, oneshot};

use crate::{Item, ModelError, ModelEvent, ModelProvider, ModelRequest, ModelStream, Usage};
use output::Utf8Buffer;

/// Context window used when the model was trained on at least this many tokens.
const MAX_CONTEXT: u32 = 4096;
/// Generated-token cap when the request sets none.
const DEFAULT_MAX_OUTPUT: usize = 512;
/// A prompt must leave room for at least this many generated tokens (or the requested
/// maximum, if smaller) after old items are dropped.
const MIN_OUTPUT_ROOM: usize = 64;
/// Tokens decoded per llama.cpp batch while reading the prompt.
const BATCH_SIZE: usize = 512;

/// Runs configured GGUF models in-process. Models load lazily on first use and stay loaded.
pub struct LocalProvider {
    models: BTreeMap<String, PathBuf>,
    threads: usize,
    /// The job queue of each model's worker thread, by model name.
    workers: Mutex<HashMap<String, std_mpsc::Sender<Job>>>,
}

impl LocalProvider {
    /// Creates the provider. `models` maps the names usable as `local/<name>` to GGUF files;
    /// `threads` is the number of CPU threads llama.cpp uses per generation (0 picks the
    /// number of available cores). Nothing is loaded until a model is first used.
    pub fn new(models: BTreeMap<String, PathBuf>, threads: usize) -> Self {
        Self {
            models,
            threads,
            workers: Mutex::new(HashMap::new()),
        }
    }

    /// Queues `job` on the worker for `name`, starting a worker if there is none or the
    /// previous one stopped (e.g. because the file failed to load).
    fn submit(&self, name: &str, path: &Path, job: Job) -> Result<(), ModelError> {
        let mut workers = self
            .workers
            .lock()
            .map_err(|_| ModelError::Local("local model registry lock poisoned".to_owned()))?;
        let job = match workers.get(name) {
            Some(tx) => match tx.send(job) {
                Ok(()) => return Ok(()),
                Err(std_mpsc::SendError(job)) => job,
            },
            None => job,
        };
        let (tx, rx) = std_mpsc::channel();
        let threads = if self.threads == 0 {
            std::thread::available_parallelism().map_or(1, usize::from)
        } else {
            self.threads
        };
        let worker_path = path.to_path_buf();
        let worker_name = name.to_owned();
        std::thread::Builder::new()
            .name(format!("paddock-local-{name}"))
            .spawn(move || worker_main(&worker_name, &worker_path, threads, &rx))
            .map_err(|e| ModelError::Local(format!("could not start the model thread: {e}")))?;
        tx.send(job)
            .map_err(|_| ModelError::Local("the local model thread stopped at once".to_owned()))?;
        workers.insert(name.to_owned(), tx);
        Ok(())
    }
}

#[async_trait::async_trait]
impl ModelProvider for LocalProvider {
    async fn stream(&self, request: ModelRequest) -> Result<ModelStream, ModelError> {
        let Some(path) = self.models.get(&request.model) else {
            let known: Vec<&str> = self.models.keys().map(String::as_str).collect();
            return Err(ModelError::NotConfigured(format!(
                "no local model `{}` is configured (configured: {})",
                request.model,
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            )));
        };
        if !path.is_file() {
            return Err(ModelError::NotConfigured(format!(
                "the file {} of local model `{}` does not exist; run `paddock models pull` to fetch it",
                path.display(),
                request.model
            )));
        }
        let name = request.model.clone();
        let (ready_tx, ready_rx) = oneshot::channel();
        let (events_tx, mut events_rx) = mpsc::unbounded_channel();
        self.submit(
            &name,
            path,
            Job {
                request,
                ready: ready_tx,
                events: events_tx,
            },
        )?;
        // The worker answers once the model is loaded and the prompt fits, so those errors
        // come back from `stream` itself rather than inside the stream.
        match ready_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(ModelError::Local(format!(
                    "the thread running local model `{name}` stopped"
                )));
            }
        }
        Ok(Box::pin(futures::stream::poll_fn(move |cx| {
            events_rx.poll_recv(cx)
        })))
    }
}

/// One request queued on a model's worker.
struct Job {
    request: ModelRequest,
    /// Answered before generation starts: `Ok` or the reason the request cannot run.
    ready: oneshot::Sender<Result<(), ModelError>>,
    /// The stream handed to the caller; closed when the caller drops it.
    events: mpsc::UnboundedSender<Result<ModelEvent, ModelError>>,
}

/// The llama.cpp backend, initialised once per process (llama.cpp refuses a second init).
fn backend() -> Result<&'static LlamaBackend, ModelError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    BACKEND
        .get_or_init(|| {
            // llama.cpp logs to stderr by default; route it through tracing instead.
            llama_cpp_2::send_logs_to_tracing(llama_cpp_2::LogOptions::default());
            LlamaBackend::init().map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| ModelError::Local(format!("could not start llama.cpp: {e}")))
}

/// The worker thread of one model: load it, then serve jobs until the provider is dropped.
fn worker_main(name: &str, path: &Path, threads: usize, jobs: &std_mpsc::Receiver<Job>) {
    let started = Instant::now();
    let loaded = backend().and_then(|backend| {
        let model = LlamaModel::load_from_file(backend, path, &LlamaModelParams::default())
            .map_err(|e| {
                ModelError::Local(format!(
                    "could not load local model `{name}` from {}: {e}",
                    path.display()
                ))
            })?;
        Ok((backend, model))
    });
    let (backend, model) = match loaded {
        Ok(ok) => ok,
        Err(e) => {
            tracing::error!(model = name, error = %e, "local model failed to load");
            fail_queued(jobs, &e);
            return;
        }
    };
    let n_ctx = match model.n_ctx_train() {
        0 => MAX_CONTEXT,
        n => n.min(MAX_CONTEXT),
    };
    let threads = i32::try_from(threads).unwrap_or(i32::MAX);
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx))
        .with_n_batch(BATCH_SIZE as u32)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let ctx = match model.new_context(backend, params) {
        Ok(ctx) => ctx,
        Err(e) => {
            let e = ModelError::Local(format!(
                "could not create a context for local model `{name}`: {e}"
            ));
            tracing::error!(model = name, error = %e, "local model failed to load");
            fail_queued(jobs, &e);
            return;
        }
    };
    let template = match model.chat_template(None) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::info!(model = name, error = %e, "GGUF has no chat template; using ChatML");
            None
        }
    };
    tracing::info!(
        model = name,
        path = %path.display(),
        n_ctx,
        threads,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "local model loaded"
    );
    let mut session = Session {
        name,
        model: &model,
        ctx,
        template,
        n_ctx: n_ctx as usize,
        cached: Vec::new(),
    };
    while let Ok(job) = jobs.recv() {
        session.run(job);
    }
}

/// Answers every job already queued with `error` (the worker is about to stop).
fn fail_queued(jobs: &std_mpsc::Receiver<Job>, error: &ModelError) {
    while let Ok(job) = jobs.try_recv() {
        let _ = job.ready.send(Err(ModelError::Local(error.to_string())));
    }
}

/// A loaded model with its context, owned by the worker thread.
struct Session<'m> {
    name: &'m str,
    model: &'m LlamaModel,
    ctx: LlamaContext<'m>,
    /// The GGUF's chat template; `None` means ChatML.
    template: Option<LlamaChatTemplate>,
    n_ctx: usize,
    /// The tokens whose keys and values are in the context's KV cache, in order.
    cached: Vec<LlamaToken>,
}

/// A request turned into tokens that fit the context.
struct Prepared {
    tokens: Vec<LlamaToken>,
    max_output: usize,
    /// The GBNF grammar, when tools are offered.
    grammar: Option<String>,
    /// The offered tool names.
    tools: Vec<String>,
}

/// How a job's generation ended, for the caller of [`Session::generate`].
enum Outcome {
    Done,
    /// The caller dropped the stream.
    Cancelled,
}

impl Session<'_> {
    fn run(&mut self, job: Job) {
        if job.events.is_closed() {
            return;
        }
        let prepared = match self.prepare(&job.request) {
            Ok(p) => p,
            Err(e) => {
                let _ = job.ready.send(Err(e));
                return;
            }
        };
        if job.ready.send(Ok(())).is_err() {
            return;
        }
        match self.generate(&prepared, &job.events) {
            Ok(Outcome::Done) => {}
            Ok(Outcome::Cancelled) => {
                tracing::debug!(
                    model = self.name,
                    "local generation cancelled by the caller"
                );
            }
            Err(e) => {
                tracing::warn!(model = self.name, error = %e, "local generation failed");
                let _ = job.events.send(Err(e));
            }
        }
    }

    /// Renders and tokenizes the prompt, dropping the oldest items until it fits.
    fn prepare(&self, request: &ModelRequest) -> Result<Prepared, ModelError> {
        let wanted = request
            .max_output_tokens
            .map_or(DEFAULT_MAX_OUTPUT, |n| n as usize)
            .clamp(1, self.n_ctx.saturating_sub(1).max(1));
        let system = prompt::system_prompt(&request.system, &request.tools);
        let mut items: Vec<Item> = request.items.clone();
        let mut dropped = 0usize;
        let tokens = loop {
            let text = self.render(&system, &items)?;
            let tokens = self.model.vocab().tokenize(text.as_bytes(), true, true);
            if tokens.len() + wanted <= self.n_ctx {
                break tokens;
            }
            if !prompt::drop_oldest(&mut items) {
                // Nothing left to drop: accept a smaller output budget down to a floor.
                if tokens.len() + wanted.min(MIN_OUTPUT_ROOM) <= self.n_ctx {
                    break tokens;
                }
                return Err(ModelError::Local(format!(
                    "the prompt is {} tokens, too long for local model `{}` (context {} tokens, \
                     including room for the answer); shorten the system prompt, tools or last message",
                    tokens.len(),
                    self.name,
                    self.n_ctx
                )));
            }
            dropped += 1;
        };
        if dropped > 0 {
            tracing::info!(
                model = self.name,
                dropped,
                "dropped the oldest conversation items to fit the local model's context"
            );
        }
        let max_output = wanted.min(self.n_ctx - tokens.len());
        let (grammar, tools) = if request.tools.is_empty() {
            (None, Vec::new())
        } else {
            (
                Some(grammar::tool_grammar(&request.tools)),
                request.tools.iter().map(|t| t.name.clone()).collect(),
            )
        };
        Ok(Prepared {
            tokens,
            max_output,
            grammar,
            tools,
        })
    }

    /// Applies the model's chat template (ChatML when it has none or llama.cpp cannot apply it).
    fn render(&self, system: &str, items: &[Item]) -> Result<String, ModelError> {
        let messages = prompt::messages(system, items)
            .into_iter()
            .map(|m| LlamaChatMessage::new(m.role.to_owned(), m.content))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| ModelError::Local(format!("invalid chat message: {e}")))?;
        if let Some(template) = &self.template {
            match self.model.apply_chat_template(template, &messages, true) {
                Ok(text) => return Ok(text),
                Err(e) => {
                    tracing::debug!(model = self.name, error = %e, "chat template failed; using ChatML");
                }
            }
        }
        let chatml = LlamaChatTemplate::new("chatml")
            .map_err(|e| ModelError::Local(format!("ChatML template: {e}")))?;
        self.model
            .apply_chat_template(&chatml, &messages, true)
            .map_err(|e| ModelError::Local(format!("could not apply the ChatML template: {e}")))
    }

    /// Reads the prompt and generates the answer, sending events as it goes.
    fn generate(
        &mut self,
        prepared: &Prepared,
        events: &mpsc::UnboundedSender<Result<ModelEvent, ModelError>>,
    ) -> Result<Outcome, ModelError> {
        let result = self.generate_inner(prepared, events);
        if result.is_err() {
            // The KV cache may be half-written; start from scratch next time.
            self.ctx.clear_kv_cache();
            self.cached.clear();
        }
        result
    }

    fn generate_inner(
        &mut self,
        prepared: &Prepared,
        events: &mpsc::UnboundedSender<Result<ModelEvent, ModelError>>,
    ) -> Result<Outcome, ModelError> {
        let tokens = &prepared.tokens;
        if tokens.is_empty() {
            return Err(ModelError::Local("the prompt is empty".to_owned()));
        }
        let started = Instant::now();

        // Re-use the KV cache for the prefix this prompt shares with what is already there.
        // At least one token must be decoded to get logits for the first sample.
        let mut reuse = self
            .cached
            .iter()
            .zip(tokens)
            .take_while(|(a, b)| a == b)
            .count()
            .min(tokens.len() - 1);
        if reuse < self.cached.len() {
            let removed = u32::try_from(reuse)
                .ok()
                .and_then(|p0| self.ctx.clear_kv_cache_seq(Some(0), Some(p0), None).ok());
            if removed != Some(true) {
                // Some architectures cannot drop part of a sequence; start over instead.
                self.ctx.clear_kv_cache();
                reuse = 0;
            }
            self.cached.truncate(reuse);
        }

        let mut batch = LlamaBatch::new(BATCH_SIZE, 1);
        let mut pos = reuse;
        for chunk in tokens[reuse..].chunks(BATCH_SIZE) {
            if events.is_closed() {
                return Ok(Outcome::Cancelled);
            }
            batch.clear();
            for &token in chunk {
                let last = pos + 1 == tokens.len();
                batch
                    .add(token, to_pos(pos)?, &[0], last)
                    .map_err(|e| ModelError::Local(format!("batch: {e}")))?;
                pos += 1;
            }
            self.ctx.decode(&mut batch).map_err(|e| {
                ModelError::Local(format!("llama.cpp could not read the prompt: {e}"))
            })?;
            self.cached.extend_from_slice(chunk);
        }
        let prefill = started.elapsed();

        let mut sampler = match &prepared.grammar {
            Some(gbnf) => {
                let grammar = LlamaSampler::grammar(self.model, gbnf, "root").map_err(|e| {
                    ModelError::Local(format!("could not build the tool-call grammar: {e}"))
                })?;
                LlamaSampler::chain_simple([grammar, LlamaSampler::greedy()])
            }
            None => LlamaSampler::greedy(),
        };
        let vocab = self.model.vocab();
        let mut logits_index = batch.n_tokens() - 1;
        let mut generated = 0usize;
        let mut utf8 = Utf8Buffer::default();
        let mut piece = Vec::new();
        // Decided by the first byte: the grammar only lets a tool call start with `<`.
        let mut is_tool_call: Option<bool> = if prepared.grammar.is_some() {
            None
        } else {
            Some(false)
        };
        let mut tool_output = Vec::new();

        while generated < prepared.max_output {
            if events.is_closed() {
                return Ok(Outcome::Cancelled);
            }
            let token = sampler.sample(&self.ctx, logits_index);
            // A control token such as ChatML's `<|im_start|>` means the model is starting a
            // new turn of its own: treat it as the end of the answer too.
            if vocab.is_eog(token) || vocab.is_control(token) {
                break;
            }
            generated += 1;
            piece.clear();
            vocab.token_to_piece_into(token, &mut piece, false, None);
            if is_tool_call.is_none() && !piece.is_empty() {
                is_tool_call = Some(piece.first() == Some(&b'<'));
            }
            if is_tool_call == Some(true) {
                tool_output.extend_from_slice(&piece);
            } else {
                let text = utf8.push(&piece);
                if !text.is_empty() && events.send(Ok(ModelEvent::TextDelta(text))).is_err() {
                    return Ok(Outcome::Cancelled);
                }
            }
            if generated == prepared.max_output {
                break;
            }
            batch.clear();
            batch
                .add(token, to_pos(pos)?, &[0], true)
                .map_err(|e| ModelError::Local(format!("batch: {e}")))?;
            self.ctx
                .decode(&mut batch)
                .map_err(|e| ModelError::Local(format!("llama.cpp could not generate: {e}")))?;
            self.cached.push(token);
            pos += 1;
            logits_index = 0;
        }

        let elapsed = started.elapsed();
        let decode_secs = (elapsed - prefill).as_secs_f64();
        tracing::debug!(
            model = self.name,
            prompt_tokens = tokens.len(),
            reused_tokens = reuse,
            generated,
            prefill_ms = prefill.as_millis() as u64,
            tokens_per_second = if decode_secs > 0.0 {
                generated as f64 / decode_secs
            } else {
                0.0
            },
            "local generation finished"
        );

        let send = |event: ModelEvent| events.send(Ok(event)).is_ok();
        if is_tool_call == Some(true) {
            let text = String::from_utf8_lossy(&tool_output);
            let call = output::parse_tool_call(&text, &prepared.tools)?;
            if !send(ModelEvent::ToolCall(call)) {
                return Ok(Outcome::Cancelled);
            }
        } else {
            let rest = utf8.finish();
            if !rest.is_empty() && !send(ModelEvent::TextDelta(rest)) {
                return Ok(Outcome::Cancelled);
            }
        }
        let usage = Usage {
            input_tokens: tokens.len() as u64,
            output_tokens: generated as u64,
            ..Usage::default()
        };
        if !send(ModelEvent::Usage(usage)) || !send(ModelEvent::Finished) {
            return Ok(Outcome::Cancelled);
        }
        Ok(Outcome::Done)
    }
}

/// A token position as llama.cpp wants it.
fn to_pos(pos: usize) -> Result<i32, ModelError> {
    i32::try_from(pos).map_err(|_| ModelError::Local(format!("token position {pos} out of range")))
}
