"""The story corpus, a character tokenizer, datasets of token windows, and resumable loaders.

Nothing is downloaded: ``generate_stories`` writes short Simplified-Chinese children's stories from
this module's own templates and word lists. Every story follows one plot,

    开头(谁, 住在哪里) → 性格 → 目标 → 出发 → 障碍 → (自己试一试) → 反应 → 帮手来了
    → 对话 → 帮手解决障碍 → 道谢 → 目标达成 → 结尾/寓意,

and each slot draws from a list. Obstacles and helpers come as matched pairs (the helper's action
solves exactly that obstacle), and a heavy-basket obstacle appears only when the goal is to carry
a basket, so every combination reads as a coherent story. ``count_stories()`` gives the exact number
of combinations (about 5 * 10**10); all list items are distinct, so distinct combinations give
distinct stories.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

__all__ = [
    "CharTokenizer",
    "ResumableSampler",
    "TokenWindows",
    "build_datasets",
    "count_stories",
    "generate_stories",
    "load_text_files",
    "make_loader",
    "story_datasets",
]

# ---------------------------------------------------------------------------------------------
# Word lists. {name}: the protagonist's name, {pron}: 他/她/它, {short}: the helper's short name.
# ---------------------------------------------------------------------------------------------

# (indefinite description, name, pronoun)
_CHARACTERS: tuple[tuple[str, str, str], ...] = (
    ("一个小男孩", "小明", "他"),
    ("一个小男孩", "乐乐", "他"),
    ("一个小男孩", "豆豆", "他"),
    ("一个小男孩", "小军", "他"),
    ("一个小男孩", "阿福", "他"),
    ("一个小男孩", "天天", "他"),
    ("一个小女孩", "小红", "她"),
    ("一个小女孩", "朵朵", "她"),
    ("一个小女孩", "丫丫", "她"),
    ("一个小女孩", "小芳", "她"),
    ("一个小女孩", "甜甜", "她"),
    ("一个小女孩", "兰兰", "她"),
    ("一只小兔子", "跳跳", "它"),
    ("一只小松鼠", "灰灰", "它"),
    ("一只小鸭子", "嘎嘎", "它"),
    ("一头小熊", "憨憨", "它"),
    ("一只小猫", "咪咪", "它"),
    ("一只小狐狸", "红红", "它"),
    ("一只小山羊", "咩咩", "它"),
    ("一只小刺猬", "球球", "它"),
)

_PLACES = (
    "一个小山村里",
    "大森林的边上",
    "一座小镇上",
    "清清的小河边",
    "青青的草原上",
    "高高的山脚下",
)

_OPENINGS = ("从前，{place}住着{kind}，名叫{name}。", "{place}有{kind}，名字叫{name}。")

_TRAITS = ("又聪明又勇敢", "很懂礼貌", "做事特别认真", "最爱唱歌", "跑得飞快", "总是笑眯眯的")

_TRAIT_SENTENCES = ("{name}{trait}，大家都喜欢{pron}。", "{name}{trait}。", "")

_GOAL_SENTENCES = (
    "有一天，{name}想{wish}。",
    "一天早上，{name}决定{wish}。",
    "这个周末，{name}打算{wish}。",
)


@dataclass(frozen=True)
class _Goal:
    wish: str  # follows 想/决定/打算
    quote: str  # what the protagonist says when asked
    success: str  # follows {name}终于
    carry: bool  # carries a basket (allows the heavy-basket obstacle)


_GOALS = (
    _Goal(
        "给山那边的外婆送一篮草莓",
        "我要去外婆家送草莓",
        "把草莓送到了外婆家，外婆高兴得合不拢嘴",
        True,
    ),
    _Goal("去山顶看一看远处的大海", "我要去山顶看大海", "爬上了山顶，看到了远处蓝蓝的大海", False),
    _Goal(
        "去镇上给生病的妈妈买药",
        "我要去镇上给妈妈买药",
        "买到了药，妈妈吃了药，病很快就好了",
        False,
    ),
    _Goal(
        "去湖边找回昨天丢的风筝", "我要去湖边找我的风筝", "在湖边的柳树上找到了自己的风筝", False
    ),
    _Goal(
        "去草地上采一束野花送给老师",
        "我要去采野花送给老师",
        "采到了一大束野花，老师收到花，非常高兴",
        False,
    ),
    _Goal("给在山上干活的爷爷送饭", "我要给爷爷送饭", "把热乎乎的饭菜送到了爷爷手里", False),
    _Goal("去小镇上的图书馆借一本故事书", "我要去图书馆借故事书", "借到了一本好看的故事书", False),
    _Goal(
        "去森林那边参加好朋友的生日会",
        "我要去参加好朋友的生日会",
        "赶上了生日会，吃到了香甜的蛋糕",
        False,
    ),
    _Goal(
        "给河对岸的姑姑送一篮苹果",
        "我要给姑姑送苹果",
        "把苹果送到了姑姑家，姑姑夸{pron}是个好孩子",
        True,
    ),
    _Goal(
        "去山坡上的果园帮爷爷摘桃子",
        "我要去果园帮爷爷摘桃子",
        "来到果园，帮爷爷摘了满满一筐桃子",
        False,
    ),
)

_DEPARTURES = (
    "{pron}早早地出了门。",
    "{pron}高高兴兴地出发了。",
    "{pron}一蹦一跳地上路了。",
    "吃过早饭，{pron}就上路了。",
)

_OBSTACLE_OPENERS = ("走着走着，", "可是没走多远，", "半路上，")


@dataclass(frozen=True)
class _Helper:
    arrival: str  # follows 正在这时，
    short: str  # how the story names the helper afterwards
    action: str  # a full clause that solves the obstacle


@dataclass(frozen=True)
class _Obstacle:
    text: str  # follows an opener
    attempt: str  # the protagonist tries alone and fails
    helpers: tuple[_Helper, ...]
    needs_carry: bool = False


_OBSTACLES = (
    _Obstacle(
        "{pron}来到小河边，发现小桥被大水冲断了，河水又急又深。",
        "{pron}想踩着石头过河，可是石头太滑了，差点儿掉进水里。",
        (
            _Helper(
                "一只大乌龟从水里探出头来",
                "大乌龟",
                "大乌龟让{name}坐在自己宽宽的背上，稳稳地游到了对岸",
            ),
            _Helper(
                "一位渔夫伯伯划着小船经过",
                "渔夫伯伯",
                "渔夫伯伯把{name}扶上小船，一直把{pron}送到了对岸",
            ),
            _Helper(
                "几只小河狸游了过来", "小河狸们", "小河狸们搬来许多树枝，很快搭好了一座新的小桥"
            ),
        ),
    ),
    _Obstacle(
        "一块大石头从山坡上滚了下来，正好挡住了窄窄的小路。",
        "{pron}使劲推那块石头，可是石头一动也不动。",
        (
            _Helper("一头大象慢慢地走了过来", "大象", "大象用长长的鼻子一卷，就把大石头挪到了路边"),
            _Helper("几个砍柴的叔叔走了过来", "叔叔们", "叔叔们一起用力，把大石头推到了路边"),
            _Helper("一头大黑熊从树林里走了出来", "大黑熊", "大黑熊用力一推，大石头就滚到了路边"),
        ),
    ),
    _Obstacle(
        "{pron}走进一片大树林，四周的树长得都差不多，{pron}迷路了。",
        "{pron}往左走走，又往右走走，可是怎么也找不到出去的路。",
        (
            _Helper(
                "一只小鸟落在了树枝上", "小鸟", "小鸟飞在前面带路，{name}跟着小鸟，很快就走出了树林"
            ),
            _Helper(
                "一只萤火虫提着小灯笼飞了过来",
                "萤火虫",
                "萤火虫在前面一闪一闪地照路，带着{name}走出了树林",
            ),
            _Helper(
                "一位护林员叔叔巡山路过",
                "护林员叔叔",
                "护林员叔叔拿出地图，给{name}指出了正确的方向",
            ),
        ),
    ),
    _Obstacle(
        "天空忽然乌云密布，下起了大雨，{pron}只好躲到一棵大树下。",
        "{pron}等了好久，可是雨一直下个不停。",
        (
            _Helper(
                "一位老奶奶撑着伞走了过来",
                "老奶奶",
                "老奶奶把自己的大伞借给了{name}，还送了{pron}一段路",
            ),
            _Helper(
                "一只小青蛙从草丛里跳了出来", "小青蛙", "小青蛙摘来一片大大的荷叶，给{name}当雨伞"
            ),
        ),
    ),
    _Obstacle(
        "路边一条大黄狗冲着{pron}汪汪直叫，{pron}吓得不敢往前走。",
        "{pron}想从旁边绕过去，可是大黄狗叫得更凶了。",
        (
            _Helper(
                "一位大婶听见叫声，从院子里走了出来",
                "大婶",
                "大婶喝住了大黄狗，还陪着{name}走过了那段路",
            ),
            _Helper(
                "一位牵着羊的老爷爷走了过来", "老爷爷", "老爷爷摸摸大黄狗的头，大黄狗马上就不叫了"
            ),
        ),
    ),
    _Obstacle(
        "{pron}不小心被树根绊了一跤，脚扭伤了，疼得走不了路。",
        "{pron}试着站起来，可是脚疼得更厉害了。",
        (
            _Helper(
                "一只小猴子从树上跳了下来",
                "小猴子",
                "小猴子采来草药给{name}敷上，又扶着{pron}慢慢往前走",
            ),
            _Helper(
                "一位医生阿姨从这里路过",
                "医生阿姨",
                "医生阿姨帮{name}包好了伤口，又陪{pron}走完了剩下的路",
            ),
        ),
    ),
    _Obstacle(
        "手里的篮子越来越重，{pron}走得满头大汗，再也提不动了。",
        "{pron}歇了一会儿，可是刚走几步又累了。",
        (
            _Helper(
                "一匹小马哒哒哒地跑了过来", "小马", "小马把篮子驮在背上，陪着{name}走完了剩下的路"
            ),
            _Helper(
                "邻居家的大哥哥骑着自行车经过",
                "大哥哥",
                "大哥哥把篮子放进车筐里，推着车陪{name}一起走",
            ),
        ),
        needs_carry=True,
    ),
)

_REACTIONS = (
    "{name}急得直跺脚。",
    "{name}难过得快要哭了。",
    "{name}不知道该怎么办才好。",
    "{name}对自己说：“别怕，总会有办法的。”",
)

_DIALOGUES = (
    "{short}问：“{name}，你怎么了？”{name}把自己的难处告诉了{short}。",
    "{short}关心地问：“你要去做什么呀？”{name}说：“{quote}。”",
    "{short}说：“别着急，我来帮你！”",
    "",
)

_THANKS = (
    "{name}高兴地说：“谢谢{short}！”",
    "{name}连声向{short}道谢。",
    "“太谢谢{short}了！”{name}开心地说。",
)

_SUCCESS_OPENERS = ("就这样，", "没过多久，", "最后，")

_ENDINGS = (
    "{name}明白了：大家互相帮助，就没有过不去的坎。",
    "从那以后，{name}也常常去帮助有困难的朋友。",
    "{name}心想：以后我也要像{short}一样帮助别人。",
    "{name}懂得了：只要不放弃，办法总比困难多。",
    "这真是难忘的一天，{name}开心极了。",
)

_WITH_ATTEMPT = (False, True)  # whether the protagonist first tries alone


def _obstacle_helper_pairs(goal: _Goal) -> list[tuple[_Obstacle, _Helper]]:
    return [(o, h) for o in _OBSTACLES if goal.carry or not o.needs_carry for h in o.helpers]


_OTHER_SLOTS = (
    _CHARACTERS,
    _PLACES,
    _OPENINGS,
    _TRAITS,
    _TRAIT_SENTENCES,
    _GOAL_SENTENCES,
    _DEPARTURES,
    _OBSTACLE_OPENERS,
    _WITH_ATTEMPT,
    _REACTIONS,
    _DIALOGUES,
    _THANKS,
    _SUCCESS_OPENERS,
    _ENDINGS,
)


def count_stories() -> int:
    """The exact number of distinct stories ``generate_stories`` can write.

    The count is ``sum over goals g of |compatible (obstacle, helper) pairs of g|`` times the
    product of the sizes of the other, independent slots (character, place, opening, trait, ...).

    Example:
        >>> count_stories() > 1_000_000
        True
    """
    pairs = sum(len(_obstacle_helper_pairs(g)) for g in _GOALS)
    return pairs * math.prod(len(slot) for slot in _OTHER_SLOTS)


def _one_story(rng: random.Random) -> str:
    kind, name, pron = rng.choice(_CHARACTERS)
    goal = rng.choice(_GOALS)
    obstacle, helper = rng.choice(_obstacle_helper_pairs(goal))
    fields = {"name": name, "pron": pron, "short": helper.short, "quote": goal.quote}
    parts = [
        rng.choice(_OPENINGS).format(place=rng.choice(_PLACES), kind=kind, name=name),
        rng.choice(_TRAIT_SENTENCES).format(trait=rng.choice(_TRAITS), **fields),
        rng.choice(_GOAL_SENTENCES).format(wish=goal.wish, **fields),
        rng.choice(_DEPARTURES),
        rng.choice(_OBSTACLE_OPENERS) + obstacle.text,
        obstacle.attempt if rng.choice(_WITH_ATTEMPT) else "",
        rng.choice(_REACTIONS),
        "正在这时，" + helper.arrival + "。",
        rng.choice(_DIALOGUES),
        helper.action + "。",
        rng.choice(_THANKS),
        rng.choice(_SUCCESS_OPENERS) + "{name}终于" + goal.success + "。",
        rng.choice(_ENDINGS),
    ]
    return "".join(parts).format(**fields)


def generate_stories(n: int, seed: int = 0) -> list[str]:
    """Write ``n`` short Chinese children's stories, deterministically from ``seed``.

    Stories are 80 to 300 characters long; the same ``(n, seed)`` gives the same list on any
    machine (only ``random.Random(seed)`` is used), and the first ``k`` stories of ``n > k`` are
    the ``k`` stories of ``generate_stories(k, seed)``. ``count_stories()`` distinct stories exist.

    Args:
        n: number of stories, ``n >= 0``.
        seed: a non-negative integer.

    Example:
        >>> generate_stories(2, seed=0)[1] == generate_stories(5, seed=0)[1]
        True
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"Invalid number of stories: n={n!r} (must be an integer >= 0)")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"Invalid seed: seed={seed!r} (must be an integer >= 0)")
    rng = random.Random(seed)
    return [_one_story(rng) for _ in range(n)]


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------


class CharTokenizer:
    """One id per character, plus an end-of-story token (id 0) and an unknown token (id 1).

    ``decode`` writes the end-of-story token as ``"\\n"`` and the unknown token as ``"\\ufffd"``.
    With ``map_unknown=False`` (the default) ``encode`` rejects characters outside the vocabulary;
    with ``map_unknown=True`` it maps them to ``unk_id``.

    Args:
        chars: the vocabulary's characters (order is kept; duplicates are an error).
        map_unknown: map unknown characters to ``unk_id`` instead of raising ``ValueError``.

    Example:
        >>> tok = CharTokenizer.from_texts(["小兔子"])
        >>> tok.decode(tok.encode("兔子"))
        '兔子'
    """

    eos_id = 0
    unk_id = 1
    EOS_TEXT = "\n"
    UNK_TEXT = "\ufffd"

    def __init__(self, chars: Sequence[str], map_unknown: bool = False) -> None:
        chars = list(chars)
        bad = [c for c in chars if not isinstance(c, str) or len(c) != 1]
        if bad:
            raise ValueError(
                f"Invalid vocabulary: chars must be single characters, got {bad[:5]!r}"
            )
        if len(set(chars)) != len(chars):
            raise ValueError("Invalid vocabulary: chars contains duplicates")
        self.chars = chars
        self.map_unknown = bool(map_unknown)
        self._stoi = {c: i + 2 for i, c in enumerate(chars)}
        self._itos = [self.EOS_TEXT, self.UNK_TEXT, *chars]

    @classmethod
    def from_texts(cls, texts: Iterable[str], map_unknown: bool = False) -> CharTokenizer:
        """A tokenizer whose vocabulary is every character in ``texts``, sorted."""
        if isinstance(texts, str):
            raise TypeError("from_texts expects an iterable of strings, not a single string")
        chars: set[str] = set()
        for t in texts:
            chars.update(t)
        return cls(sorted(chars), map_unknown=map_unknown)

    @property
    def vocab_size(self) -> int:
        return len(self._itos)

    def encode(self, text: str) -> list[int]:
        """Ids of the characters of ``text`` (no end-of-story token is added)."""
        stoi = self._stoi
        if self.map_unknown:
            return [stoi.get(c, self.unk_id) for c in text]
        try:
            return [stoi[c] for c in text]
        except KeyError:
            unknown = sorted({c for c in text if c not in stoi})
            raise ValueError(
                f"Text holds {len(unknown)} character(s) the tokenizer does not know: "
                f"{''.join(unknown[:20])!r} (build it with map_unknown=True to map them to <unk>)"
            ) from None

    def decode(self, ids: Iterable[int]) -> str:
        """The text of ``ids``; ``decode(encode(s)) == s`` for any ``s`` over the vocabulary."""
        itos = self._itos
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(itos):
                raise ValueError(f"Invalid token id: {i} (vocab_size={len(itos)})")
            out.append(itos[i])
        return "".join(out)

    def save(self, path: str | os.PathLike) -> None:
        """Write the vocabulary as JSON (UTF-8, readable)."""
        data = {"type": "CharTokenizer", "chars": self.chars, "map_unknown": self.map_unknown}
        Path(path).write_text(json.dumps(data, ensure_ascii=False, indent=0), encoding="utf-8")

    @classmethod
    def load(cls, path: str | os.PathLike) -> CharTokenizer:
        """Read a tokenizer written by ``save``."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(data, dict) or data.get("type") != "CharTokenizer":
            raise ValueError(f"{path}: not a CharTokenizer file")
        return cls(data["chars"], map_unknown=data.get("map_unknown", False))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, CharTokenizer)
            and self.chars == other.chars
            and self.map_unknown == other.map_unknown
        )

    def __repr__(self) -> str:
        return f"CharTokenizer(vocab_size={self.vocab_size}, map_unknown={self.map_unknown})"


# ---------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------


class TokenWindows(Dataset):
    """Windows ``(x, y)`` of a token stream: ``x = tokens[s:s+T]``, ``y = tokens[s+1:s+T+1]``.

    Window ``i`` starts at ``s = i * stride``; the default stride ``T`` gives non-overlapping
    windows. ``stories`` keeps the texts the stream was made from.
    """

    def __init__(
        self, tokens: torch.Tensor, block_size: int, stride: int | None = None, stories=()
    ) -> None:
        self.tokens = tokens
        self.block_size = block_size
        self.stride = block_size if stride is None else stride
        self.stories = list(stories)
        self._n = (len(tokens) - block_size - 1) // self.stride + 1

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not -self._n <= i < self._n:
            raise IndexError(f"window index {i} out of range for {self._n} windows")
        s = (i % self._n) * self.stride
        chunk = self.tokens[s : s + self.block_size + 1]
        return chunk[:-1], chunk[1:]


def _stream(stories: Sequence[str], tokenizer: CharTokenizer) -> torch.Tensor:
    ids: list[int] = []
    for s in stories:
        ids.extend(tokenizer.encode(s))
        ids.append(tokenizer.eos_id)
    return torch.tensor(ids, dtype=torch.long)


def build_datasets(
    stories: Sequence[str],
    block_size: int,
    val_fraction: float = 0.1,
    seed: int = 0,
    *,
    stride: int | None = None,
) -> tuple[TokenWindows, TokenWindows, CharTokenizer]:
    """Split ``stories`` into train and validation by story, then cut each into token windows.

    Identical stories are kept once, so no story is in both splits. The validation split holds
    ``max(1, round(val_fraction * n_unique))`` stories chosen by ``random.Random(seed)``. Each
    split is one stream ``story, <eos>, story, <eos>, ...`` cut into windows of ``block_size``
    tokens with ``y`` the window shifted by one. The tokenizer's vocabulary is every character of
    the corpus (so validation text never maps to ``<unk>``).

    Args:
        stories: the corpus, one string per story.
        block_size: context length ``T`` (>= 1).
        val_fraction: share of stories in the validation split, in (0, 1).
        seed: seed of the split.
        stride: distance between window starts (default ``block_size``: no overlap).

    Example:
        >>> train, val, tok = build_datasets(generate_stories(100), block_size=64)
        >>> x, y = train[0]
        >>> bool((x[1:] == y[:-1]).all())
        True
    """
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"Invalid block_size: block_size={block_size!r} (must be an integer >= 1)")
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"Invalid val_fraction: val_fraction={val_fraction!r} (must be in (0, 1))")
    if stride is not None and (not isinstance(stride, int) or stride < 1):
        raise ValueError(f"Invalid stride: stride={stride!r} (must be an integer >= 1)")
    if isinstance(stories, str):
        raise TypeError("stories must be a sequence of strings, not a single string")
    unique = list(dict.fromkeys(s for s in stories if s))
    if not unique:
        raise ValueError("Empty corpus: stories holds no non-empty story")
    if len(unique) < 2:
        raise ValueError(
            f"Corpus too small: {len(unique)} distinct story; "
            "at least 2 are needed to split by story"
        )
    order = list(range(len(unique)))
    random.Random(seed).shuffle(order)
    n_val = min(len(unique) - 1, max(1, round(val_fraction * len(unique))))
    val_stories = [unique[i] for i in sorted(order[:n_val])]
    train_stories = [unique[i] for i in sorted(order[n_val:])]

    needed = block_size + 1
    for split, ss in (("training", train_stories), ("validation", val_stories)):
        n_tokens = sum(len(s) + 1 for s in ss)
        if n_tokens < needed:
            raise ValueError(
                f"Stories too short for block_size={block_size}: the {split} split has "
                f"{n_tokens} tokens (characters plus one end-of-story token per story), "
                f"but one window needs {needed}; add stories or lower block_size "
                f"(e.g. a validation split of {len(ss)} stories needs at least "
                f"{needed - len(ss)} characters in total)"
            )

    tokenizer = CharTokenizer.from_texts(unique)
    train = TokenWindows(_stream(train_stories, tokenizer), block_size, stride, train_stories)
    val = TokenWindows(_stream(val_stories, tokenizer), block_size, stride, val_stories)
    return train, val, tokenizer


# ---------------------------------------------------------------------------------------------
# Sampler and loader
# ---------------------------------------------------------------------------------------------


class ResumableSampler(Sampler[int]):
    """Indices of one epoch for one process: reproducible, shardable, and resumable mid-epoch.

    The order of epoch ``e`` is ``permutation(n)`` drawn from
    ``numpy.random.default_rng([seed, e])`` (or ``0..n-1`` without shuffle), a pure function of
    ``(seed, e)``. It is padded by wrapping around to ``ceil(n / num_replicas) * num_replicas``
    indices and process ``rank`` takes every ``num_replicas``-th one starting at ``rank``, so all
    shards have the same length.

    ``set_start(b)`` makes the next pass skip its first ``b`` batches (``b * batch_size``
    indices) without loading them; it applies to that one pass. After a pass runs to the end, the
    epoch advances by one, so a plain ``for epoch ...: for batch in loader`` loop sees a new order
    every epoch; ``set_epoch(e)`` sets it explicitly (as with ``DistributedSampler``).

    Args:
        n: dataset length.
        shuffle: shuffle each epoch.
        seed: non-negative integer.
        num_replicas: number of processes; rank: this process (0 <= rank < num_replicas).
        batch_size: the per-process batch size, used by ``set_start``.

    Example:
        >>> s = ResumableSampler(10, shuffle=True, seed=0, batch_size=4)
        >>> full = list(s.order(0))
        >>> s.set_epoch(0); s.set_start(1)
        >>> list(s) == full[4:]
        True
    """

    def __init__(
        self,
        n: int,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        *,
        batch_size: int = 1,
    ) -> None:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise ValueError(f"Invalid dataset length: n={n!r} (must be an integer >= 1)")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"Invalid seed: seed={seed!r} (must be an integer >= 0)")
        if not isinstance(num_replicas, int) or num_replicas < 1:
            raise ValueError(f"Invalid num_replicas: num_replicas={num_replicas!r} (must be >= 1)")
        if not isinstance(rank, int) or not 0 <= rank < num_replicas:
            raise ValueError(f"Invalid rank: rank={rank!r} (must be in [0, {num_replicas}))")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"Invalid batch_size: batch_size={batch_size!r} (must be >= 1)")
        self.n = n
        self.shuffle = bool(shuffle)
        self.seed = seed
        self.num_replicas = num_replicas
        self.rank = rank
        self.batch_size = batch_size
        self.num_samples = math.ceil(n / num_replicas)
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int) -> None:
        if not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"Invalid epoch: epoch={epoch!r} (must be an integer >= 0)")
        self.epoch = epoch

    def set_start(self, batch_index: int) -> None:
        if not isinstance(batch_index, int) or batch_index < 0:
            raise ValueError(f"Invalid batch_index: batch_index={batch_index!r} (must be >= 0)")
        self.start = batch_index

    def num_batches(self, drop_last: bool = False) -> int:
        """Batches per epoch for this process."""
        if drop_last:
            return self.num_samples // self.batch_size
        return math.ceil(self.num_samples / self.batch_size)

    def order(self, epoch: int) -> np.ndarray:
        """This process's indices for ``epoch`` (all of them, ignoring ``set_start``)."""
        if self.shuffle:
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        else:
            perm = np.arange(self.n)
        total = self.num_samples * self.num_replicas
        if total > self.n:
            perm = np.resize(perm, total)  # wrap around: equal-length shards
        return perm[self.rank : total : self.num_replicas]

    def __len__(self) -> int:
        return max(0, self.num_samples - self.start * self.batch_size)

    def __iter__(self) -> Iterator[int]:
        skip, self.start = self.start * self.batch_size, 0
        epoch = self.epoch
        for i in self.order(epoch)[skip:]:
            yield int(i)
        if self.epoch == epoch:
            self.epoch = epoch + 1


def make_loader(
    dataset: Dataset,
    batch_size: int,
    shuffle: bool = True,
    seed: int = 0,
    num_workers: int = 0,
    num_replicas: int = 1,
    rank: int = 0,
    *,
    drop_last: bool = False,
) -> DataLoader:
    """A ``DataLoader`` whose order is reproducible from ``seed`` and resumable mid-epoch.

    The sampler is a ``ResumableSampler`` (``loader.sampler``); ``loader.batch_size`` is the
    per-process batch size. ``pin_memory`` is on only when CUDA is available.

    Args:
        dataset: a map-style dataset of ``(x, y)`` pairs.
        batch_size: per-process batch size (>= 1).
        shuffle: reshuffle each epoch.
        seed: seed of the order.
        num_workers: loader worker processes (>= 0).
        num_replicas, rank: data-parallel sharding (``torchrun``'s world size and rank).
        drop_last: drop the last incomplete batch.

    Example:
        >>> train, val, tok = build_datasets(generate_stories(100), block_size=32)
        >>> x, y = next(iter(make_loader(train, batch_size=8)))
        >>> tuple(x.shape)
        (8, 32)
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"Invalid batch_size: batch_size={batch_size!r} (must be an integer >= 1)")
    if not isinstance(num_workers, int) or num_workers < 0:
        raise ValueError(f"Invalid num_workers: num_workers={num_workers!r} (must be >= 0)")
    if len(dataset) == 0:
        raise ValueError("Empty dataset: it holds no window")
    sampler = ResumableSampler(
        len(dataset), shuffle, seed, num_replicas, rank, batch_size=batch_size
    )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
        generator=torch.Generator().manual_seed(seed),
        persistent_workers=False,
    )


# ---------------------------------------------------------------------------------------------
# Reader corpora and presets
# ---------------------------------------------------------------------------------------------


def load_text_files(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    """Stories from UTF-8 text files, one story per blank-line-separated block.

    Lines inside a block keep their newlines; ``\\r\\n`` becomes ``\\n``; a UTF-8 byte-order mark
    is dropped. A file that is not valid UTF-8 raises ``ValueError`` naming the file and the byte
    offset of the first bad byte.

    Example:
        >>> load_text_files([])
        []
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    stories: list[str] = []
    for p in paths:
        raw = Path(p).read_bytes()
        bom = 3 if raw.startswith(b"\xef\xbb\xbf") else 0
        try:
            text = raw[bom:].decode("utf-8")
        except UnicodeDecodeError as e:
            raise ValueError(
                f"{os.fspath(p)}: not valid UTF-8 at byte offset {e.start + bom} "
                f"(byte 0x{raw[e.start + bom]:02x}); re-save the file as UTF-8"
            ) from None
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        blocks = re.split(r"\n[ \t\u3000]*\n", text)
        stories.extend(b.strip() for b in blocks if b.strip())
    return stories


_CACHE: dict[tuple[int, int, int], tuple[Any, Any, Any]] = {}


def story_datasets(preset: Any, seed: int = 0) -> tuple[TokenWindows, TokenWindows, CharTokenizer]:
    """``build_datasets(generate_stories(preset.n_stories, seed), preset.block_size, 0.1, seed)``.

    ``preset`` is a name from ``storyopt_lib.model.PRESETS`` or a ``Preset``. Results are cached
    in-process (the datasets are read-only), so pages and tests share one copy.

    Example:
        >>> train, val, tok = story_datasets("tiny")
        >>> train.block_size
        64
    """
    from .model import get_preset

    p = get_preset(preset) if isinstance(preset, str) else preset
    key = (p.n_stories, p.block_size, seed)
    if key not in _CACHE:
        _CACHE[key] = build_datasets(generate_stories(p.n_stories, seed), p.block_size, 0.1, seed)
    return _CACHE[key]


def _length_range() -> tuple[int, int]:
    """Exact (shortest, longest) story length over every combination (used by the tests).

    All names are two characters and all pronouns one, so a story's length is a sum over slots
    once the character, goal and (obstacle, helper) pair are fixed; each other slot is then
    minimised or maximised on its own.
    """
    lo, hi = 10**9, 0
    for kind, name, pron in _CHARACTERS:
        for goal in _GOALS:
            for obstacle, helper in _obstacle_helper_pairs(goal):
                f = {"name": name, "pron": pron, "short": helper.short, "quote": goal.quote}
                fixed = "正在这时，" + helper.arrival + "。" + helper.action + "。"
                fixed += "{name}终于" + goal.success + "。" + obstacle.text
                base = len(fixed.format(**f))
                slots = [
                    [o.format(place=p, kind=kind, name=name) for o in _OPENINGS for p in _PLACES],
                    [t.format(trait=tr, **f) for t in _TRAIT_SENTENCES for tr in _TRAITS],
                    [g.format(wish=goal.wish, **f) for g in _GOAL_SENTENCES],
                    [s.format(**f) for s in _DEPARTURES],
                    list(_OBSTACLE_OPENERS),
                    ["", obstacle.attempt.format(**f)],
                    *[[s.format(**f) for s in slot] for slot in (_REACTIONS, _DIALOGUES, _THANKS)],
                    list(_SUCCESS_OPENERS),
                    [s.format(**f) for s in _ENDINGS],
                ]
                lo = min(lo, base + sum(min(map(len, s)) for s in slots))
                hi = max(hi, base + sum(max(map(len, s)) for s in slots))
    return lo, hi
