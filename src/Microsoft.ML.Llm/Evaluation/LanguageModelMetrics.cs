namespace Microsoft.ML.Llm;

/// <summary>Loss-based metrics of a language model on a data set.</summary>
/// <param name="Loss">Mean cross-entropy in nats per predicted token.</param>
/// <param name="Perplexity">exp(Loss).</param>
/// <param name="BitsPerByte">Total nats / (ln 2 · UTF-8 bytes of the predicted tokens); NaN when byte counts are unknown.</param>
/// <param name="Tokens">Predicted tokens evaluated.</param>
public sealed record LanguageModelMetrics(double Loss, double Perplexity, double BitsPerByte, long Tokens);
