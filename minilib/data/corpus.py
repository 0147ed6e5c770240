r"""A generated English-like corpus whose entropy rate per character is known exactly.

The text is written by a *unifilar Markov source*: a finite set of grammar states; in state
$s$ the source emits a word $w$ with probability $p(w \mid s)$, writes it as the string
$r(s, w)$, and moves to the state $\delta(s, w)$ that the state and the word determine. Because
the next state is a function of the current state and the word, the state sequence can be read
back from the words, so the probability of any text, its entropy rate and its character
frequencies all have closed forms (:cite:`cover2006elements`, chapter 4). Every LM loss in the
book is shown against that floor.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Hashable

import numpy as np

from minilib._checks import check_nonnegative_int

__all__ = ["Emission", "MarkovTextSource", "english_like_grammar", "tiny_corpus"]

State = Hashable


@dataclass(frozen=True)
class Emission:
    """One way out of a state: the word, how it is written there, its probability, where it leads."""

    word: str
    text: str
    prob: float
    next_state: State


class MarkovTextSource:
    r"""A unifilar Markov source of text: states emit words, the word fixes the next state.

    $$ P(w_1 \dots w_m) = \prod_{k=1}^{m} p(w_k \mid s_{k-1}), \qquad s_k = \delta(s_{k-1}, w_k),
       \qquad s_0 = \text{start}, $$

    and the text is the concatenation $r(s_0, w_1)\, r(s_1, w_2) \cdots$ of the words' renderings.

    ``emissions`` maps every state to its list of :class:`Emission`; the probabilities of a state
    sum to one, no two emissions of a state share a rendering, and the renderings are *prefix-free
    with one character of look-ahead*: for every state $s$ the strings $r(s,w)\,c$, with $c$ any
    first character that state $\delta(s,w)$ can write, are prefix-free. Then a reader who has seen
    one character past the end of a word knows the word, which makes the per-character entropy
    rate exact (see :meth:`entropy_rate_per_char`). The constructor checks all of this and that
    the chain is irreducible (every state reachable from every state). See :cite:`cover2006elements`.
    """

    def __init__(self, emissions: dict[State, list[Emission]], start: State):
        if not isinstance(emissions, dict) or not emissions:
            raise TypeError(f"emissions must be a non-empty dict state -> list[Emission], got {type(emissions).__name__}")
        if start not in emissions:
            raise ValueError(f"start must be one of the states of emissions, got {start!r}")
        self.start = start
        self.states: list[State] = list(emissions)
        self.index = {s: i for i, s in enumerate(self.states)}
        self.emissions = {s: list(es) for s, es in emissions.items()}
        for s, es in self.emissions.items():
            if not es:
                raise ValueError(f"emissions[{s!r}] is empty")
            for e in es:
                if e.next_state not in self.index:
                    raise ValueError(f"emissions[{s!r}]: word {e.word!r} leads to unknown state {e.next_state!r}")
                if not e.text:
                    raise ValueError(f"emissions[{s!r}]: word {e.word!r} has an empty rendering")
                if not e.prob > 0:
                    raise ValueError(f"emissions[{s!r}]: word {e.word!r} has probability {e.prob}, must be > 0")
            total = math.fsum(e.prob for e in es)
            if abs(total - 1.0) > 1e-9:
                raise ValueError(f"emissions[{s!r}]: probabilities sum to {total}, must sum to 1")
        self._check_decodable()
        self._check_irreducible()
        self._by_text = {s: {e.text: e for e in es} for s, es in self.emissions.items()}
        self._max_len = max(len(e.text) for es in self.emissions.values() for e in es)
        self._prefix_mass = {s: self._prefix_masses(es) for s, es in self.emissions.items()}
        self._cum = {s: np.cumsum([e.prob for e in es]) for s, es in self.emissions.items()}

    @staticmethod
    def _prefix_masses(es: list[Emission]) -> dict[str, float]:
        """For every non-empty prefix $u$ of a rendering: the total probability of the renderings that start with $u$."""
        mass: dict[str, float] = {}
        for e in es:
            for k in range(1, len(e.text) + 1):
                mass[e.text[:k]] = mass.get(e.text[:k], 0.0) + e.prob
        return mass

    def _check_decodable(self) -> None:
        first = {s: {e.text[0] for e in es} for s, es in self.emissions.items()}
        for s, es in self.emissions.items():
            texts = [e.text for e in es]
            if len(set(texts)) != len(texts):
                twice = sorted({t for t in texts if texts.count(t) > 1})
                raise ValueError(f"emissions[{s!r}]: several emissions are written {twice}; the rendering "
                                 f"must identify the word and the next state")
            extended = sorted((e.text + c, k) for k, e in enumerate(es) for c in first[e.next_state])
            # In sorted order a string that is a prefix of another is a prefix of its successor.
            for (a, ka), (b, kb) in zip(extended, extended[1:]):
                if ka != kb and b.startswith(a):
                    raise ValueError(f"emissions[{s!r}]: renderings of {es[ka].word!r} and {es[kb].word!r} are not "
                                     f"prefix-free with one character of look-ahead ({a!r} is a prefix of {b!r})")

    def _check_irreducible(self) -> None:
        n = len(self.states)
        adj = np.zeros((n, n), dtype=bool)
        for s, es in self.emissions.items():
            for e in es:
                adj[self.index[s], self.index[e.next_state]] = True
        reach = adj | np.eye(n, dtype=bool)
        for _ in range(max(1, math.ceil(math.log2(n))) + 1):
            reach = reach | ((reach.astype(np.int64) @ reach.astype(np.int64)) > 0)
        if not reach.all():
            i, j = np.argwhere(~reach)[0]
            raise ValueError(f"emissions: the chain is not irreducible, state {self.states[j]!r} "
                             f"cannot be reached from {self.states[i]!r}")

    # ------------------------------------------------------------------ closed forms

    def transition_matrix(self) -> np.ndarray:
        r"""State-to-state transition matrix $T_{st} = \sum_{w:\,\delta(s,w)=t} p(w \mid s)$, shape (S, S)."""
        n = len(self.states)
        T = np.zeros((n, n))
        for s, es in self.emissions.items():
            for e in es:
                T[self.index[s], self.index[e.next_state]] += e.prob
        return T

    def stationary_distribution(self) -> np.ndarray:
        r"""The unique $\pi$ with $\pi T = \pi$, $\sum_s \pi_s = 1$, shape (S,), ordered as ``self.states``.

        Solved as a linear system: $(T^\top - I)\pi = 0$ with one equation replaced by the
        normalisation. Unique because the chain is irreducible :cite:`cover2006elements`.
        """
        n = len(self.states)
        A = self.transition_matrix().T - np.eye(n)
        A[-1, :] = 1.0
        b = np.zeros(n)
        b[-1] = 1.0
        return np.linalg.solve(A, b)

    def entropy_rate_per_word(self) -> float:
        r"""Entropy rate of the word process in nats per word.

        $$ H_{\text{word}} = \sum_s \pi_s\, H(p(\cdot \mid s)) = -\sum_s \pi_s \sum_w p(w\mid s)\log p(w\mid s). $$

        The pairs $e_k = (s_{k-1}, w_k)$ form a first-order Markov chain (the next pair depends on
        $e_k$ only through $\delta(s_{k-1}, w_k)$), whose entropy rate is
        $\sum_e \mu_e H(e_{k+1} \mid e_k = e)$ :cite:`cover2006elements` (Theorem 4.2.4); summing
        $\mu$ over the pairs that lead to the same state gives $\pi$.
        """
        pi = self.stationary_distribution()
        return float(sum(pi[self.index[s]] * -math.fsum(e.prob * math.log(e.prob) for e in es)
                         for s, es in self.emissions.items()))

    def mean_chars_per_word(self) -> float:
        r"""Expected rendered length of a word under the stationary law, $\bar\ell = \sum_s \pi_s \sum_w p(w\mid s)\,|r(s,w)|$."""
        pi = self.stationary_distribution()
        return float(sum(pi[self.index[s]] * math.fsum(e.prob * len(e.text) for e in es)
                         for s, es in self.emissions.items()))

    def entropy_rate_per_char(self) -> float:
        r"""Exact entropy rate of the character stream in nats per character: the floor of any LM's loss.

        $$ H_{\text{char}} = \frac{H_{\text{word}}}{\bar\ell}
           = \frac{-\sum_s \pi_s \sum_w p(w\mid s)\log p(w\mid s)}{\sum_s \pi_s \sum_w p(w\mid s)\,|r(s,w)|}. $$

        Why this is exact. Let $n_m$ be the number of characters in the first $m$ words and
        $x_{1:n}$ the first $n$ characters. With one character of look-ahead the renderings are
        prefix-free, so for $n_m < n \le n_{m+1}$ the characters $x_{1:n}$ determine
        $w_1 \dots w_m$, and $w_1 \dots w_{m+1}$ determine $x_{1:n}$; hence

        $$ P(w_1 \dots w_{m+1}) \le P(x_{1:n}) \le P(w_1 \dots w_m). $$

        By the ergodic theorem for the irreducible chain of pairs,
        $-\tfrac1m \log P(w_{1:m}) \to H_{\text{word}}$ and $n_m / m \to \bar\ell$ almost surely, so
        $-\tfrac1n \log P(x_{1:n}) \to H_{\text{word}} / \bar\ell$ :cite:`cover2006elements`
        (chapters 4 and 16). Without unique decodability the same ratio would only be an upper
        bound, since several word sequences could write the same characters.

        A model that sees only a window of $T$ characters cannot know the state at the window's
        first characters, so its best loss sits slightly above this floor for short windows.
        """
        return self.entropy_rate_per_word() / self.mean_chars_per_word()

    def char_distribution(self) -> dict[str, float]:
        r"""Long-run frequency of each character, $f(c) = \frac{1}{\bar\ell}\sum_s \pi_s \sum_w p(w\mid s)\,\#_c\, r(s,w)$."""
        pi = self.stationary_distribution()
        counts: dict[str, float] = {}
        for s, es in self.emissions.items():
            for e in es:
                for c in e.text:
                    counts[c] = counts.get(c, 0.0) + pi[self.index[s]] * e.prob
        total = math.fsum(counts.values())
        return {c: v / total for c, v in sorted(counts.items())}

    def char_unigram_entropy(self) -> float:
        r"""Entropy of the long-run character frequencies, in nats: the loss of the best context-free model.

        $$ H_1 = -\sum_c f(c) \log f(c), \qquad f \text{ from } :meth:`char_distribution`. $$

        It is the cross-entropy a model reaches by predicting every character from the frequency
        table alone; by the chain rule $H_{\text{char}} \le H_1$ :cite:`cover2006elements`.
        """
        return float(-math.fsum(p * math.log(p) for p in self.char_distribution().values()))

    # ------------------------------------------------------------------ sampling and scoring

    def sample(self, n_chars: int, *, seed: int) -> str:
        r"""Exactly ``n_chars`` characters written by the source from its start state (last word may be cut).

        Words are drawn by $w_k \sim p(\cdot \mid s_{k-1})$ with a ``numpy.random.Generator(PCG64(seed))``,
        so the text depends on ``seed`` only. See :cite:`cover2006elements`.
        """
        check_nonnegative_int("n_chars", n_chars)
        if not isinstance(seed, (int, np.integer)):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        rng = np.random.Generator(np.random.PCG64(seed))
        pieces, length, s = [], 0, self.start
        # Draw uniforms in blocks; one inverse-CDF lookup per word keeps the loop cheap.
        while length < n_chars:
            for u in rng.random(4096):
                es = self.emissions[s]
                e = es[min(int(np.searchsorted(self._cum[s], u, side="right")), len(es) - 1)]
                pieces.append(e.text)
                length += len(e.text)
                s = e.next_state
                if length >= n_chars:
                    break
        return "".join(pieces)[:n_chars]

    def _forward(self, text: str) -> dict[int, dict[State, float]]:
        """``log alpha_i(s)``: log-probability that whole words write ``text[:i]`` and leave the source in ``s``."""
        alpha: dict[int, dict[State, float]] = {0: {self.start: 0.0}}
        n = len(text)
        for i in range(n):
            for s, la in alpha.get(i, {}).items():
                table = self._by_text[s]
                for k in range(1, min(self._max_len, n - i) + 1):
                    e = table.get(text[i:i + k])
                    if e is not None:
                        slot = alpha.setdefault(i + k, {})
                        lp = la + math.log(e.prob)
                        old = slot.get(e.next_state)
                        slot[e.next_state] = lp if old is None else float(np.logaddexp(old, lp))
        return alpha

    def _log_prefix(self, text: str, alpha: dict[int, dict[State, float]], t: int) -> float:
        if t == 0:
            return 0.0
        terms = []
        for i in range(max(0, t - self._max_len), t):
            for s, la in alpha.get(i, {}).items():
                mass = self._prefix_mass[s].get(text[i:t])
                if mass:
                    terms.append(la + math.log(mass))
        return float(np.logaddexp.reduce(terms)) if terms else -math.inf

    def log_prob(self, text: str) -> float:
        r"""Exact natural-log probability that the source's first ``len(text)`` characters equal ``text``.

        Forward algorithm over (position, state): $\alpha_0(\text{start}) = 1$,
        $\alpha_{i+|r(s,w)|}(\delta(s,w)) \mathrel{+}= \alpha_i(s)\, p(w \mid s)$ whenever
        $r(s,w)$ is written at position $i$. Exactly one word covers the last character, starting
        at some $i < n$ and possibly cut by the end of the text, so

        $$ P(x_{1:n}) = \sum_{i < n} \sum_s \alpha_i(s) \sum_{w:\ r(s,w)_{1:n-i} = x_{i+1:n}} p(w\mid s). $$

        Returns ``-inf`` for a text the source cannot write. See :cite:`cover2006elements`.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        return self._log_prefix(text, self._forward(text), len(text))

    def char_log_probs(self, text: str) -> np.ndarray:
        r"""Log-probability of every character given all the characters before it: the ideal model's scores.

        $$ \log P(x_t \mid x_{<t}) = \log P(x_{1:t}) - \log P(x_{1:t-1}), \qquad t = 1, \dots, n, $$

        each prefix probability as in :meth:`log_prob`. Their negative mean over a long text tends to
        :meth:`entropy_rate_per_char`; plotted per position they show where the information sits
        (word beginnings). ``text`` (n characters) -> float64 array (n,); ``-inf`` from the first
        impossible character on. See :cite:`cover2006elements`.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        alpha = self._forward(text)
        prefix = np.array([self._log_prefix(text, alpha, t) for t in range(len(text) + 1)])
        with np.errstate(invalid="ignore"):
            return np.where(np.isfinite(prefix[:-1]), prefix[1:] - prefix[:-1], -np.inf)


# ---------------------------------------------------------------------- the default grammar

# Word lists written for this project. Earlier words in a list are more frequent (Zipf weights).
_ANIMATE = [("cat", "cats"), ("dog", "dogs"), ("fox", "foxes"), ("owl", "owls"), ("hen", "hens"),
            ("cow", "cows"), ("pig", "pigs"), ("bee", "bees"), ("ant", "ants"), ("frog", "frogs"),
            ("duck", "ducks"), ("goat", "goats"), ("bear", "bears"), ("wolf", "wolves"),
            ("mouse", "mice"), ("child", "children"), ("man", "men"), ("woman", "women"),
            ("girl", "girls"), ("boy", "boys"), ("king", "kings"), ("queen", "queens"),
            ("cook", "cooks"), ("baker", "bakers"), ("farmer", "farmers"), ("sailor", "sailors"),
            ("doctor", "doctors"), ("robot", "robots"), ("poet", "poets"), ("friend", "friends"),
            ("giant", "giants"), ("witch", "witches"), ("horse", "horses"), ("rabbit", "rabbits"),
            ("tiger", "tigers"), ("monkey", "monkeys"), ("teacher", "teachers"), ("pilot", "pilots"),
            ("lion", "lions"), ("snake", "snakes"), ("whale", "whales"), ("crow", "crows"),
            ("lamb", "lambs"), ("bird", "birds"), ("nurse", "nurses"), ("judge", "judges"),
            ("guard", "guards"), ("singer", "singers"), ("hunter", "hunters"), ("uncle", "uncles"),
            ("aunt", "aunts"), ("prince", "princes"), ("dragon", "dragons")]
_THINGS = [("box", "boxes"), ("cup", "cups"), ("hat", "hats"), ("key", "keys"), ("map", "maps"),
           ("pen", "pens"), ("bed", "beds"), ("car", "cars"), ("bus", "buses"), ("ship", "ships"),
           ("boat", "boats"), ("door", "doors"), ("road", "roads"), ("tree", "trees"),
           ("rock", "rocks"), ("hill", "hills"), ("lake", "lakes"), ("star", "stars"),
           ("moon", "moons"), ("cake", "cakes"), ("bell", "bells"), ("coin", "coins"),
           ("lamp", "lamps"), ("book", "books"), ("song", "songs"), ("ball", "balls"),
           ("kite", "kites"), ("drum", "drums"), ("cloud", "clouds"), ("house", "houses"),
           ("river", "rivers"), ("stone", "stones"), ("table", "tables"), ("chair", "chairs"),
           ("apple", "apples"), ("window", "windows"), ("garden", "gardens"), ("letter", "letters"),
           ("bridge", "bridges"), ("basket", "baskets"), ("candle", "candles"), ("clock", "clocks"),
           ("field", "fields"), ("forest", "forests"), ("tower", "towers"), ("bag", "bags"), ("jar", "jars"),
           ("pot", "pots"), ("nest", "nests"), ("wheel", "wheels"), ("shoe", "shoes"), ("coat", "coats"),
           ("fence", "fences"), ("gate", "gates"), ("pond", "ponds"), ("boot", "boots"), ("spoon", "spoons"),
           ("bottle", "bottles"), ("pillow", "pillows"), ("mirror", "mirrors"), ("ladder", "ladders"),
           ("tent", "tents"), ("cart", "carts"), ("rope", "ropes")]
_NAMES = ["anna", "ben", "clara", "dan", "eva", "leo", "mia", "sam", "tom", "zoe"]
_ADJECTIVES = ["big", "small", "old", "young", "red", "blue", "green", "grey", "dark", "bright",
               "cold", "warm", "tall", "tiny", "brave", "lazy", "quiet", "loud", "happy", "sad",
               "wild", "busy", "soft", "heavy", "round", "golden", "sleepy", "hungry", "proud",
               "kind", "angry", "empty", "little", "strange", "clever", "gentle", "funny", "shiny",
               "silly", "wet", "fat", "thin", "slow", "fast", "pink", "black", "white", "brown",
               "yellow", "purple", "dusty", "noisy", "lucky", "sharp", "smooth", "rough", "fresh", "tired",
               "rich", "poor", "polite", "curious", "lonely"]
# (third person singular, plural present, past)
_TRANSITIVE = [("sees", "see", "saw"), ("finds", "find", "found"), ("likes", "like", "liked"),
               ("wants", "want", "wanted"), ("takes", "take", "took"), ("holds", "hold", "held"),
               ("makes", "make", "made"), ("carries", "carry", "carried"),
               ("follows", "follow", "followed"), ("chases", "chase", "chased"),
               ("watches", "watch", "watched"), ("paints", "paint", "painted"),
               ("opens", "open", "opened"), ("builds", "build", "built"),
               ("brings", "bring", "brought"), ("helps", "help", "helped"),
               ("loves", "love", "loved"), ("keeps", "keep", "kept"), ("drops", "drop", "dropped"),
               ("eats", "eat", "ate"), ("reads", "read", "read"), ("pushes", "push", "pushed"),
               ("pulls", "pull", "pulled"), ("visits", "visit", "visited"),
               ("catches", "catch", "caught"), ("feeds", "feed", "fed"), ("washes", "wash", "washed"),
               ("fixes", "fix", "fixed"), ("sells", "sell", "sold"), ("buys", "buy", "bought"),
               ("throws", "throw", "threw"), ("meets", "meet", "met"), ("draws", "draw", "drew"),
               ("kicks", "kick", "kicked")]
_INTRANSITIVE = [("sleeps", "sleep", "slept"), ("runs", "run", "ran"), ("sings", "sing", "sang"),
                 ("waits", "wait", "waited"), ("smiles", "smile", "smiled"),
                 ("laughs", "laugh", "laughed"), ("dances", "dance", "danced"),
                 ("swims", "swim", "swam"), ("walks", "walk", "walked"), ("sits", "sit", "sat"),
                 ("rests", "rest", "rested"), ("plays", "play", "played"),
                 ("jumps", "jump", "jumped"), ("cries", "cry", "cried"),
                 ("wanders", "wander", "wandered"), ("shouts", "shout", "shouted"),
                 ("works", "work", "worked"), ("dreams", "dream", "dreamed"),
                 ("climbs", "climb", "climbed"), ("sneezes", "sneeze", "sneezed"), ("hums", "hum", "hummed"),
                 ("yawns", "yawn", "yawned"), ("waves", "wave", "waved"), ("nods", "nod", "nodded"),
                 ("hops", "hop", "hopped"), ("grins", "grin", "grinned"),
                 ("travels", "travel", "travelled")]
_THING_VERBS = [("falls", "fall", "fell"), ("shines", "shine", "shone"), ("stands", "stand", "stood"),
                ("breaks", "break", "broke"), ("rolls", "roll", "rolled"), ("shakes", "shake", "shook"),
                ("glows", "glow", "glowed"), ("sinks", "sink", "sank"), ("turns", "turn", "turned"),
                ("rings", "ring", "rang"), ("floats", "float", "floated"), ("waits", "wait", "waited"),
                ("melts", "melt", "melted"), ("drips", "drip", "dripped"), ("spins", "spin", "spun"),
                ("cracks", "crack", "cracked"), ("bends", "bend", "bent")]
_ADVERBS = ["slowly", "quickly", "quietly", "again", "today", "often", "softly", "alone", "loudly",
            "gladly", "early", "late", "there", "here", "away", "home", "soon", "twice", "together",
            "badly"]
_PREPOSITIONS = ["in", "on", "under", "near", "behind", "beside", "with", "over", "into", "by",
                 "from", "past", "above", "below", "across", "around"]
_CONJUNCTIONS = ["and", "but", "while", "because", "so", "until", "when"]
_DET_SINGULAR = ["this", "that", "every", "each", "one"]
_DET_PLURAL = ["these", "those", "some", "many", "two", "three", "few", "all"]
_DET_EITHER = ["the", "my", "your", "his", "her", "our", "their", "no"]


def _zipf(items: list, exponent: float) -> list[tuple[object, float]]:
    w = [1.0 / (r + 1) ** exponent for r in range(len(items))]
    z = math.fsum(w)
    return [(it, wi / z) for it, wi in zip(items, w)]


def english_like_grammar(*, zipf_exponent: float = 1.0) -> tuple[dict[State, list[Emission]], State]:
    r"""The book's default grammar: sentences like ``Two hungry foxes chased my ball into the river.``

    Structure (probabilities in the code below): subject (a name, or determiner, up to two
    adjectives, noun) - verb agreeing in number with the subject, present or past, intransitive
    verbs only for things - object noun phrase for transitive verbs - optional adverb,
    prepositional phrase, or one conjunction opening a second clause - ``.`` and a newline.
    Within each word class, the $r$-th word has probability $\propto (r+1)^{-a}$ with
    $a$ = ``zipf_exponent`` (a Zipf law :cite:`zipf1949human`). Determiners like ``the`` leave the
    number open; the noun's form (``fox``/``foxes``) then fixes the verb's agreement, so every
    state is a function of the previous state and word (the source is unifilar).

    Rendering: the first word of a sentence and every name are capitalised, other words follow
    a space, and the sentence end ``.`` is written ``".\n"``.

    Returns ``(emissions, start)`` for :class:`MarkovTextSource`. See :cite:`cover2006elements`.
    """
    if not zipf_exponent >= 0:
        raise ValueError(f"zipf_exponent must be >= 0, got {zipf_exponent!r}")
    a = zipf_exponent
    start = ("det", "subj", 0)
    table: dict[State, dict[tuple[str, State], float]] = {}

    def add(state, word, prob, nxt):
        key = (word, nxt)
        table.setdefault(state, {})
        table[state][key] = table[state].get(key, 0.0) + prob

    def after_noun(role, number, animate, clause):
        return {"subj": ("verb", number, animate, clause), "obj": ("after_obj", clause),
                "pp": ("after_pp", clause)}[role]

    def end_or_continue(state, clause, *, p_end, p_adverb, p_prep, p_conj):
        if clause == 1:
            p_end, p_conj = p_end + p_conj, 0.0
        add(state, ".", p_end, start)
        for w, p in _zipf(_ADVERBS, a):
            add(state, w, p_adverb * p, ("after_adv", clause))
        for w, p in _zipf(_PREPOSITIONS, a):
            add(state, w, p_prep * p, ("det", "pp", clause))
        if p_conj > 0:
            for w, p in _zipf(_CONJUNCTIONS, a):
                add(state, w, p_conj * p, ("det", "subj", 1))

    p_animate = {"subj": 0.7, "obj": 0.4, "pp": 0.3}
    p_adjective = {0: 0.4, 1: 0.2, 2: 0.0}
    for clause in (0, 1):
        for role in ("subj", "obj", "pp"):
            det_state = ("det", role, clause)
            p_name = 0.15 if role == "subj" else 0.05
            for w, p in _zipf(_NAMES, a):
                nxt = after_noun(role, "sg", True, clause)
                add(det_state, w, p_name * p, nxt)
            for dets, number, share in ((_DET_EITHER, "any", 0.6), (_DET_SINGULAR, "sg", 0.2),
                                        (_DET_PLURAL, "pl", 0.2)):
                for w, p in _zipf(dets, a):
                    add(det_state, w, (1 - p_name) * share * p, ("np", role, number, 0, clause))
            for number in ("sg", "pl", "any"):
                for n_adj in (0, 1, 2):
                    state = ("np", role, number, n_adj, clause)
                    p_adj = p_adjective[n_adj]
                    for w, p in _zipf(_ADJECTIVES, a):
                        if p_adj > 0:
                            add(state, w, p_adj * p, ("np", role, number, n_adj + 1, clause))
                    forms = {"sg": [(0, 1.0)], "pl": [(1, 1.0)], "any": [(0, 0.6), (1, 0.4)]}[number]
                    for nouns, animate, share in ((_ANIMATE, True, p_animate[role]),
                                                  (_THINGS, False, 1 - p_animate[role])):
                        for (pair, p) in _zipf(nouns, a):
                            for form, q in forms:
                                add(state, pair[form], (1 - p_adj) * share * p * q,
                                    after_noun(role, ("sg", "pl")[form], animate, clause))
        for number in ("sg", "pl"):
            tense = [(0, 0.5), (2, 0.5)] if number == "sg" else [(1, 0.5), (2, 0.5)]
            state = ("verb", number, True, clause)
            for verbs, share, nxt in ((_TRANSITIVE, 0.6, ("det", "obj", clause)),
                                      (_INTRANSITIVE, 0.4, ("after_intr", clause))):
                for forms, p in _zipf(verbs, a):
                    for form, q in tense:
                        add(state, forms[form], share * p * q, nxt)
            state = ("verb", number, False, clause)
            for forms, p in _zipf(_THING_VERBS, a):
                for form, q in tense:
                    add(state, forms[form], p * q, ("after_intr", clause))
        end_or_continue(("after_intr", clause), clause, p_end=0.4, p_adverb=0.25, p_prep=0.25, p_conj=0.1)
        end_or_continue(("after_adv", clause), clause, p_end=0.6, p_adverb=0.0, p_prep=0.3, p_conj=0.1)
        end_or_continue(("after_obj", clause), clause, p_end=0.5, p_adverb=0.15, p_prep=0.25, p_conj=0.1)
        end_or_continue(("after_pp", clause), clause, p_end=0.8, p_adverb=0.1, p_prep=0.0, p_conj=0.1)

    def render(state, word):
        if word == ".":
            return ".\n"
        if state == start:
            return word.capitalize()
        return " " + (word.capitalize() if word in _NAMES else word)

    emissions = {s: [Emission(w, render(s, w), p, nxt) for (w, nxt), p in ws.items() if p > 0]
                 for s, ws in table.items()}
    return emissions, start


def tiny_corpus(n_chars: int = 200_000, seed: int = 0, *, zipf_exponent: float = 1.0) -> tuple[str, MarkovTextSource]:
    r"""The book's language-modelling data: ``n_chars`` characters from :func:`english_like_grammar`.

    Returns ``(text, source)``; ``source.entropy_rate_per_char()`` is the floor $H_{\text{char}}$
    (nats/char) and ``source.char_unigram_entropy()`` the no-context baseline $H_1$.
    See :cite:`cover2006elements`.
    """
    source = MarkovTextSource(*english_like_grammar(zipf_exponent=zipf_exponent))
    return source.sample(n_chars, seed=seed), source
