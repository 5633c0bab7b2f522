using static Microsoft.ML.Llm.Data.Tests.Curation.CurationTestData;

namespace Microsoft.ML.Llm.Data.Tests.Curation;

public class LanguageIdentificationTests
{
    [Theory]
    [InlineData("The quick brown fox jumps over the lazy dog and runs into the forest.", "en")]
    [InlineData("Der schnelle braune Fuchs springt über den faulen Hund und läuft in den Wald.", "de")]
    [InlineData("Le renard brun rapide saute par-dessus le chien paresseux et court dans la forêt.", "fr")]
    [InlineData("El rápido zorro marrón salta sobre el perro perezoso y corre hacia el bosque.", "es")]
    [InlineData("La volpe marrone veloce salta sopra il cane pigro e corre nella foresta.", "it")]
    [InlineData("A rápida raposa marrom pula sobre o cão preguiçoso e corre para a floresta.", "pt")]
    [InlineData("De snelle bruine vos springt over de luie hond en rent het bos in.", "nl")]
    [InlineData("Szybki brązowy lis przeskakuje nad leniwym psem i biegnie do lasu.", "pl")]
    [InlineData("Rychlá hnědá liška skáče přes líného psa a běží do lesa.", "cs")]
    [InlineData("Быстрая коричневая лиса прыгает через ленивую собаку и бежит в лес.", "ru")]
    [InlineData("Den snabba bruna räven hoppar över den lata hunden och springer in i skogen.", "sv")]
    [InlineData("Hızlı kahverengi tilki tembel köpeğin üzerinden atlar ve ormana koşar.", "tr")]
    [InlineData("素早い茶色の狐はのろまな犬を飛び越えて森へ走っていきます。", "ja")]
    [InlineData("敏捷的棕色狐狸跳过了懒狗，然后跑进了森林。", "zh")]
    [InlineData("يقفز الثعلب البني السريع فوق الكلب الكسول ويركض إلى الغابة.", "ar")]
    public void DetectsSentencesInTheRequiredLanguages(string text, string expected)
    {
        var (language, score) = LanguageIdentifier.Default.Detect(text);
        Assert.Equal(expected, language);
        Assert.InRange(score, 0.65f, 1f);
    }

    [Fact]
    public void BundledModelIsSmallAndCoversAtLeast20Languages()
    {
        var languages = LanguageIdentifier.Default.Languages;
        Assert.True(languages.Count >= 20);
        foreach (var code in new[] { "en", "de", "fr", "es", "it", "pt", "nl", "pl", "cs", "ru", "sv", "tr", "ja", "zh", "ar" })
            Assert.Contains(code, languages);
        using var stream = typeof(LanguageIdentifier).Assembly.GetManifestResourceStream("Microsoft.ML.Llm.Data.Resources.langid.bin")!;
        Assert.InRange(stream.Length, 1, 2 * 1024 * 1024);
        Assert.Equal(("", 0f), LanguageIdentifier.Default.Detect("12345 !!! ..."));
    }

    [Fact]
    public void DetectAndFilterInAPipelineAndAfterSaveLoad()
    {
        var ml = new MLContext(seed: 1);
        var data = LoadWithIds(ml, [
            "This is an English sentence about the weather and the garden.",
            "Dies ist ein deutscher Satz über das Wetter und den Garten.",
            "",
            "Ceci est une phrase française sur le temps et le jardin.",
        ]);
        var detect = ml.Transforms.Text.DetectLanguage("Text").Fit(data);
        var detected = detect.Transform(data);
        Assert.Equal(["en", "de", "", "fr"], Column(detected, "Language"));

        var filter = ml.Transforms.Text.FilterByLanguage("Text", ["en", "fr"]).Fit(data);
        Assert.Equal([0, 3], Ids(filter.Transform(data)));
        Assert.Equal(2, filter.LastReport!.RejectedByRule["language_not_kept"]);

        string path = TempPath("lang.zip");
        try
        {
            ml.Model.Save(detect.Append(filter), data.Schema, path);
            var loaded = ml.Model.Load(path, out _);
            var output = loaded.Transform(data);
            Assert.Equal([0, 3], Ids(output));
            Assert.Equal(["en", "fr"], Column(output, "Language"));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void UnknownLanguageAndBadThresholdGetClearErrors()
    {
        var ml = new MLContext(seed: 1);
        var unknown = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Transforms.Text.FilterByLanguage("Text", ["en", "xx"]));
        Assert.StartsWith("Option 'Languages' has 'xx', which the bundled model does not know; accepted: en, de, fr,", unknown.Message);
        var nan = Assert.Throws<ArgumentOutOfRangeException>(() => ml.Transforms.Text.FilterByLanguage("Text", ["en"], double.NaN));
        Assert.StartsWith("Option 'MinScore' must be between 0 and 1; got NaN.", nan.Message);
        var empty = Assert.Throws<ArgumentException>(() => ml.Transforms.Text.FilterByLanguage("Text", []));
        Assert.StartsWith("Option 'Languages' must list at least one language; accepted: en, de,", empty.Message);
    }
}
