"""A small fixed set of general text, English and Chinese, shipped with kinject.

Mixed into every cycle at ``general_ratio`` (so the adapter keeps the model's general
language ability while it absorbs new facts), and its held-out half is what a gate measures
general-text perplexity on. Plain, common knowledge written for kinject; nothing is
downloaded. The two halves never overlap: train on :func:`general_train`, measure on
:func:`general_eval`.
"""

from __future__ import annotations

_EN = (
    "Water boils at one hundred degrees Celsius at sea level. At higher altitudes the air "
    "pressure is lower, so water boils at a lower temperature.",
    "The Earth orbits the Sun once a year and turns on its axis once a day. The tilt of its "
    "axis gives the seasons.",
    "A library lends books to its members. Most libraries also offer newspapers, quiet rooms "
    "for study and computers with internet access.",
    "Bread is made from flour, water, salt and yeast. The yeast produces gas that makes the "
    "dough rise before it is baked.",
    "Trains run on rails and can carry many passengers at once. Many cities have underground "
    "railways that avoid the traffic on the streets.",
    "Plants use sunlight, water and carbon dioxide to make sugar. This process is called "
    "photosynthesis, and it releases oxygen into the air.",
    "A week has seven days. Many people work from Monday to Friday and rest on Saturday and "
    "Sunday.",
    "The heart pumps blood through the body. Blood carries oxygen from the lungs to the "
    "muscles and the brain.",
    "Rain forms when water vapour in clouds cools and gathers into drops that are too heavy "
    "to stay in the air.",
    "A map shows a place from above. The scale of a map tells how a distance on the paper "
    "compares with the real distance.",
    "Computers store information as bits, each of which is either zero or one. Eight bits "
    "make one byte.",
    "Most birds can fly, but some, such as penguins and ostriches, cannot. Penguins swim "
    "very well instead.",
    "The Moon has no light of its own. It reflects the light of the Sun, and its shape in the "
    "sky changes over about a month.",
    "Doctors advise people to sleep seven to nine hours a night, to drink enough water and to "
    "move every day.",
    "A bicycle has two wheels, a frame, pedals and a chain. Riding one is a cheap and healthy "
    "way to travel short distances.",
    "Ice floats on water because it is less dense than liquid water. Lakes therefore freeze "
    "from the top down.",
    "People write letters, send messages and make phone calls to stay in touch with friends "
    "and family who live far away.",
    "The ocean covers about seventy percent of the surface of the Earth and holds most of "
    "its water.",
    "Markets sell fruit, vegetables, fish and bread. Prices often change with the seasons and "
    "with the weather.",
    "A clock measures time in hours, minutes and seconds. One hour has sixty minutes and one "
    "minute has sixty seconds.",
)

_ZH = (
    "在海平面上，水在一百摄氏度时沸腾。海拔越高，气压越低，水的沸点也越低。",
    "地球每年绕太阳公转一周，每天自转一周。地轴的倾斜带来了四季的变化。",
    "图书馆向读者借阅图书。许多图书馆还提供报纸、自习室和可以上网的电脑。",
    "面包由面粉、水、盐和酵母制成。酵母产生的气体让面团在烘烤前发起来。",
    "火车在铁轨上行驶，一次可以运送许多乘客。很多城市都有地铁，可以避开地面上的交通拥堵。",
    "植物利用阳光、水和二氧化碳制造糖分，这个过程叫做光合作用，同时向空气中释放氧气。",
    "一个星期有七天。很多人星期一到星期五工作，星期六和星期天休息。",
    "心脏把血液输送到全身。血液把氧气从肺部带到肌肉和大脑。",
    "云中的水蒸气遇冷凝结成水滴，水滴太重无法停留在空中时，就形成了雨。",
    "地图从上方描绘一个地方。比例尺说明图上的距离与实际距离之间的关系。",
    "计算机用比特存储信息，每个比特不是零就是一。八个比特组成一个字节。",
    "大多数鸟会飞，但也有一些鸟不会飞，比如企鹅和鸵鸟。企鹅却非常擅长游泳。",
    "月亮本身不发光，它反射太阳的光。月亮的形状大约每个月循环变化一次。",
    "医生建议人们每晚睡七到九个小时，多喝水，并且每天活动身体。",
    "自行车有两个轮子、车架、脚踏板和链条。骑自行车是一种便宜又健康的短途出行方式。",
    "冰的密度比水小，所以冰会浮在水面上。湖泊因此从上往下结冰。",
)


def _halves(texts: tuple[str, ...]) -> tuple[list[str], list[str]]:
    return [t for i, t in enumerate(texts) if i % 4 != 3], [t for i, t in enumerate(texts)
                                                           if i % 4 == 3]


def general_train(lang: str | None = None) -> list[str]:
    """General text to mix into training (about three quarters of the set)."""
    return _pick(lang, 0)


def general_eval(lang: str | None = None) -> list[str]:
    """General text never trained on, for measuring general-text perplexity."""
    return _pick(lang, 1)


def _pick(lang: str | None, half: int) -> list[str]:
    if lang not in (None, "en", "zh"):
        raise ValueError(f"lang must be None, 'en' or 'zh', got {lang!r}")
    out: list[str] = []
    if lang in (None, "en"):
        out += _halves(_EN)[half]
    if lang in (None, "zh"):
        out += _halves(_ZH)[half]
    return out
