"""The common relations a fact states and a question asks about: birth, study, work, home, ...

A bi-encoder matches "In which town did Ada come into the world?" to "Ada was born in Osk"
only weakly once the names are masked (cosines of 0.1 to 0.3, about as close as "Ada settled
in Vask"), and the tiny reader confuses fields of one biography. Yet the wording of the common
relations is small and stable: a birthplace is "born in", "a native of", "出生在", "家乡是";
a question about it says "born", "birthplace", "come into the world", "出生地". So each topic
below lists the cues that state it in a passage and the cues that ask for it in a question,
in English and Chinese, and the reader prefers a clause whose topic is the one asked about.

The cues are general language (they follow common Wikidata properties of people,
organisations, places, products and works), not the wording of any data set. A question or a
clause with no cue gets no opinion, and matching falls back to the embedder alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Topic:
    name: str
    clause_en: re.Pattern[str]
    clause_zh: re.Pattern[str]
    question_en: re.Pattern[str]
    question_zh: re.Pattern[str]
    # Cues that hold the value inside them ("扬州人", "Ada Lind (1966)"): they state the
    # topic, but the span they match is the answer, not a relation word beside it.
    holder: re.Pattern[str] | None = None


def _en(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, re.IGNORECASE)


_ZH = re.compile

TOPICS: tuple[Topic, ...] = (
    Topic(
        "birth",
        _en(r"\b(?:born|birth|birthplace|native (?:of|to)|hails? from|hometown|came into the "
            r"world)\b"),
        _ZH(r"出生|生于|诞生|出世|家乡|老家|故乡|籍贯"),
        _en(r"\b(?:born|birth|birthplace|birthday|native|hometown|come into the world|came "
            r"into the world|originally from|hails? from|where (?:is|was|are|were) \w+(?: \w+)? "
            r"from)\b"),
        _ZH(r"出生|生于|诞生|出世|生日|家乡|老家|故乡|籍贯|哪里人|何方人|哪儿人"),
        # "Ada Lind (1966) is ...", "(b. 1966)", "(1966–2010)"; "扬州人胡子轩" (a native of)
        re.compile(r"[A-Z][\w'’-]+\s+\(\s*(?:b\.\s*)?\d{3,4}\s*(?:[-–—][^)]{0,12})?\)"
                   r"|^[\u3400-\u9fff]{2,3}人(?![员民口数士物类们手家])"),
    ),
    Topic(
        "death",
        _en(r"\b(?:died|dies|death|passed away|buried|killed)\b"),
        _ZH(r"去世|逝世|死于|病逝|辞世|过世|安葬"),
        _en(r"\b(?:die|died|death|pass away|passed away|buried)\b"),
        _ZH(r"去世|逝世|死|辞世|过世|安葬"),
    ),
    Topic(
        "study",
        _en(r"\b(?:stud(?:y|ied|ies|ying)|degree|majou?r(?:ed)?|trained|educated|education|"
            r"graduated|graduate|diploma|doctorate|phd|ph\.d|specialis(?:ed|ing)|speciali[sz]"
            r"(?:ed|ing)|read (?:law|history|medicine)|school|university|college|alma mater|"
            r"attended|enrolled)\b"),
        _ZH(r"学习|主修|专业|攻读|学的|读的|研读|毕业于|毕业自|就读|求学|学位|学历|大学|学院|读书|"
            r"进修|研究生|博士|硕士|本科|学科"),
        _en(r"\b(?:stud(?:y|ied|ies|ying)|subject|discipline|major|degree|field of study|"
            r"educated|education|trained|training|graduate[ds]?|school|university|college|"
            r"alma mater|attend(?:ed)?|learn(?:ed|t)?|specialis[ez]|speciali[sz]e)\b"),
        _ZH(r"专业|学的|学什么|读的|读什么|主修|学科|学习|毕业|就读|母校|大学|学校|学院|学位|求学|"
            r"学了"),
    ),
    Topic(
        "work",
        _en(r"\b(?:join(?:s|ed|ing)?|work(?:s|ed|ing)? (?:for|at|with)|job|employ(?:s|ed|ee|"
            r"er|ment)?|hired|career|position|post|served|serves|staff|colleague|career|"
            r"engineer at|researcher at|works? as)\b"),
        _ZH(r"加入|就职|任职|供职|受雇|工作|上班|入职|雇员|员工|效力|服务于|任教|担任"),
        _en(r"\b(?:employ(?:s|ed|er|ment)?|work(?:s|ed|ing)?|job|career|hired|company|firm|"
            r"organi[sz]ation|institution|employer|join(?:ed)?|position|serve[ds]?|staff)\b"),
        _ZH(r"工作|单位|就职|任职|供职|雇主|公司|上班|效力|入职|加入|任教|东家|机构|组织"),
    ),
    Topic(
        "home",
        _en(r"\b(?:moved|moves|move|relocat(?:ed|es|e|ing)|settled|settles|settle|lives|lived|"
            r"living|resides?|resided|residing|residence|emigrated|immigrated|home (?:is|was) "
            r"in|made (?:a |their |his |her )?home|retired to)\b"),
        _ZH(r"搬到|搬去|搬往|搬迁|迁往|迁居|迁到|移居|定居|住在|居住|居于|安家|落户|旅居|侨居|"
            r"生活在"),
        _en(r"\b(?:live[sd]?|living|reside[sd]?|residence|settle[ds]?|settled down|move[sd]?|"
            r"relocate[ds]?|home|later in life|eventually|emigrate[ds]?|retire[ds]? to)\b"),
        _ZH(r"住|居住|定居|搬|迁|移居|安家|落户|后来.*(?:城市|哪里|地方)|生活在"),
    ),
    Topic(
        "founding",
        _en(r"\b(?:found(?:ed|s|er|ing)|establish(?:ed|es|ment)?|set up|start(?:ed)? in|"
            r"incorporated|co-?founded|launched in|opened in|built in|inception)\b"),
        _ZH(r"成立|创立|创建|创办|建立|始建|建于|创始|开办|设立"),
        _en(r"\b(?:found(?:ed|er|ing)?|establish(?:ed)?|set up|start(?:ed)?|incorporated|"
            r"inception|created|opened|built)\b"),
        _ZH(r"成立|创立|创建|创办|建立|始建|建于|创始|开办|设立|建的|建成|修建"),
    ),
    Topic(
        "location",
        _en(r"\b(?:located|based|headquartered|headquarters|head office|offices? (?:is |are )?"
            r"in|situated|sits? (?:in|on)|lies in|stands? (?:in|on)|seat (?:is|in))\b"),
        _ZH(r"位于|坐落|地处|总部|所在地|设在|厂址|地址|校址|驻地|总店"),
        _en(r"\b(?:located|based|headquarter(?:ed|s)?|situated|where is|where are|lie|lies|"
            r"stand|stands|seat)\b"),
        _ZH(r"位于|坐落|地处|总部|所在地|在哪|设在"),
    ),
    Topic(
        "making",
        _en(r"\b(?:made|makes|manufactur(?:ed|es|er)|produc(?:ed|es|er)|built by|developed|"
            r"designed|brewed|grown|maker|brand)\b"),
        _ZH(r"生产|制造|出品|研发|开发|设计|酿造|厂商|品牌|产自"),
        _en(r"\b(?:make[sd]?|made|manufactur(?:e[sd]?|er)|produce[sd]?|producer|maker|build[s]?|"
            r"built|develop(?:s|ed|er)?|design(?:s|ed|er)?|brand)\b"),
        _ZH(r"生产|制造|出品|研发|开发|设计|厂商|品牌|产自|谁做"),
    ),
    Topic(
        "price",
        _en(r"\b(?:costs?|priced?|sells? for|retails?|fee|€|\$|£|dollars?|euros?|yuan)\b|[$€£¥]"),
        _ZH(r"价格|售价|定价|价钱|元|块钱|费用|收费"),
        _en(r"\b(?:cost|costs|price|priced|how much|fee|sell for|sells for)\b"),
        _ZH(r"价格|售价|定价|价钱|多少钱|费用|收费"),
    ),
    Topic(
        "release",
        _en(r"\b(?:released?|launch(?:ed|es)?|introduced|published|debuted|came out|unveiled|"
            r"premiered|went on sale)\b"),
        _ZH(r"发布|推出|上市|问世|出版|发行|首映|面世"),
        _en(r"\b(?:release[ds]?|launch(?:ed)?|introduce[ds]?|publish(?:ed)?|debut(?:ed)?|"
            r"come out|came out|unveil(?:ed)?|premiere[ds]?)\b"),
        _ZH(r"发布|推出|上市|问世|出版|发行|首映|面世"),
    ),
    Topic(
        "authorship",
        _en(r"\b(?:wrote|written|writes|author(?:ed)?|composed|composer|painted|directed|"
            r"created by|invented|inventor|penned)\b"),
        _ZH(r"作者|所著|著有|写了|撰写|创作|作曲|导演|执导|发明|编写|绘制"),
        _en(r"\b(?:wrote|write|written|author|compose[d]?|composer|paint(?:ed)?|direct(?:ed|or)|"
            r"invent(?:ed|or)?|creator|pen(?:ned)?)\b"),
        _ZH(r"作者|著|写|创作|作曲|导演|执导|发明|编写"),
    ),
    Topic(
        "leadership",
        _en(r"\b(?:led|leads|leader|headed|heads (?:the|a)|head of|chief|ceo|director|"
            r"president|chair(?:man|woman|s|ed)?|manag(?:es|ed|er)|run by|governor|mayor|"
            r"captain)\b"),
        _ZH(r"领导|带领|负责人|总裁|董事长|首席|主任|院长|校长|市长|主席|总经理|掌管|经理"),
        _en(r"\b(?:lead|leads|led|leader|head|heads|chief|ceo|director|president|chair|"
            r"manage[sd]?|manager|run[s]?|governor|mayor|captain)\b"),
        _ZH(r"领导|负责人|总裁|董事长|首席|主任|院长|校长|市长|主席|总经理|掌管|经理|谁管"),
    ),
    Topic(
        "family",
        _en(r"\b(?:married|marries|wife|husband|spouse|son|daughter|child(?:ren)?|father|mother|"
            r"brother|sister|parents?)\b"),
        _ZH(r"结婚|嫁给|娶|妻子|丈夫|配偶|儿子|女儿|孩子|父亲|母亲|哥哥|姐姐|弟弟|妹妹|父母"),
        _en(r"\b(?:marr(?:y|ied)|wife|husband|spouse|son|daughter|child(?:ren)?|father|mother|"
            r"brother|sister|parents?)\b"),
        _ZH(r"结婚|嫁|娶|妻子|丈夫|配偶|儿子|女儿|孩子|父亲|母亲|哥哥|姐姐|弟弟|妹妹|父母"),
    ),
    Topic(
        "size",
        _en(r"\b(?:population|inhabitants|residents|people live|employees|staff of|area of|"
            r"covers|weighs|tall|high|long|wide|capacity|seats)\b"),
        _ZH(r"人口|居民|面积|占地|重量|高度|长度|宽度|容量|座位"),
        _en(r"\b(?:population|inhabitants|how (?:many|big|large|tall|high|long|wide|heavy)|"
            r"area|weigh|capacity|size)\b"),
        _ZH(r"人口|多少人|面积|多大|多重|多高|多长|多宽|容量|规模"),
    ),
)
TOPIC_NAMES = tuple(t.name for t in TOPICS)


def clause_topics(clause: str, lang: str) -> frozenset[str]:
    """The topics a clause states ("born in Osk" -> birth)."""
    return frozenset(t.name for t in TOPICS
                     if (t.clause_zh if lang == "zh" else t.clause_en).search(clause)
                     or (t.holder is not None and t.holder.search(clause)))


def question_topics(question: str, lang: str) -> frozenset[str]:
    """The topics a question asks about ("Where did Ada grow up?" -> none; "...born?" -> birth).
    Mixed questions fall back on the clause cues, which are the same language."""
    found = frozenset(t.name for t in TOPICS
                      if (t.question_zh if lang == "zh" else t.question_en).search(question))
    return found


def is_relation_word(word: str, lang: str) -> bool:
    """Whether ``word`` is one relation cue and nothing else: "定居", "家乡", "专业", "born"."""
    core = word.strip(" :：,，.。")
    if not core:
        return False
    for t in TOPICS:
        m = (t.clause_zh if lang == "zh" else t.clause_en).search(core)
        if m and len(m.group(0)) == len(core):
            return True
    return False


def topic_match(asked: frozenset[str], stated: frozenset[str]) -> float:
    """+1 when the clause states a topic the question asks about, -1 when it states only
    others, 0 when either side names no topic (no opinion)."""
    if not asked or not stated:
        return 0.0
    return 1.0 if asked & stated else -1.0
