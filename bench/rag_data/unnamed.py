"""Dev questions that name nothing: what the reader's bar for such questions is fitted on.

Notices about unnamed things (a pool, a station's bike park) with one question each in other
words than the notice, and questions that no passage answers: off-topic ones, and ones about
the dev families' kinds of things whose answer is in no passage. Written for the bench, dev
only: nothing of the test families is asked here.
"""

from __future__ import annotations

# (passage, question, expected answer)
NOTICES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "en": (
        ("Members' notice: the swimming pool closes for cleaning every Tuesday morning, and "
         "lane hire costs 4 euros an hour.",
         "On which morning is swimming impossible?", "Tuesday"),
        ("Bicycle parking behind the station is free for the first two hours; after that each "
         "hour costs 50 cents.",
         "How long can I leave my bike near the trains without paying?", "two hours"),
        ("Lost property found on the trams is kept at the depot for 30 days before it is "
         "given to charity.",
         "For how many days is something left on a tram held?", "30 days"),
        ("The recycling lorry collects glass on the first Monday of each month; paper goes "
         "out every Thursday.",
         "When are old newspapers picked up?", "Thursday"),
        ("Visitors to the hospital wards are welcome between 2 pm and 8 pm; children under "
         "twelve must come with an adult.",
         "Until what time in the evening may I see a patient?", "8 pm"),
        ("The community garden lends out tools free of charge, but a deposit of 20 euros is "
         "asked for the lawnmower.",
         "What must I leave behind to borrow the mower?", "20 euros"),
    ),
    "zh": (
        ("游泳馆通知：每周二上午闭馆清洁，泳道租用每小时四十元。", "哪天上午不能去游泳？", "周二"),
        ("车站后面的自行车停车场前两个小时免费，之后每小时收费一元。",
         "自行车在车站附近停多久不用付钱？", "两个小时"),
        ("在电车上捡到的失物会在车库保存三十天，之后捐给慈善机构。",
         "落在电车上的东西能留多少天？", "三十天"),
        ("玻璃瓶每月第一个星期一回收，废纸每周四回收。", "旧报纸什么时候收走？", "周四"),
        ("病房探视时间为下午两点到晚上八点，十二岁以下儿童须由成人陪同。",
         "晚上最晚几点可以看望病人？", "八点"),
        ("社区花园免费出借工具，借割草机需要交二十元押金。", "借割草机得押多少钱？", "二十元"),
    ),
}

# Questions that no passage answers: off-topic, and about the dev families' kinds of things.
ABSENT: dict[str, tuple[str, ...]] = {
    "en": (
        "How many legs does a spider have?", "What is a good way to fall asleep faster?",
        "Why is the sky blue?", "How long should an egg be boiled?",
        "How far away is the moon?", "What is the best way to learn to juggle?",
        "Which scientist won a prize for their research?",
        "How many days of holiday do the company employees get?",
        "What warranty comes with the gadgets?", "Which town has the oldest church?",
        "How long does a fishing permit stay valid?",
        "How many lifeboats does each ship carry?",
    ),
    "zh": (
        "蜘蛛有几条腿？", "怎样才能更快入睡？", "天空为什么是蓝色的？", "鸡蛋要煮几分钟？",
        "月亮离地球有多远？", "学杂耍有什么好办法？",
        "哪位科学家因为研究获过奖？", "公司员工每年有多少天假期？", "这些电子产品保修多久？",
        "哪个城镇的教堂最古老？", "许可证的有效期是多久？", "每艘船配备几艘救生艇？",
    ),
}

# Named things with a passage each, one question the passage answers and one about something
# that does not exist but shares a part of its name with the passage's (an event at a named
# place, another product of a named maker): the passage names its place or maker, never the
# thing asked about, so the reader must abstain. Dev only, for the abstention fit.
# (passage, answerable question, expected answer, question about an absent thing)
NEAR: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    "en": (
        ("The Halvard footbridge over the Skerne was rebuilt in oak in 2009 and is closed to "
         "cyclists on market days.", "What wood was the Halvard footbridge rebuilt in?", "oak",
         "Who designed the Halvard tunnel?"),
        ("Marlow Point lighthouse has been automatic since 1994; its lamp is visible for "
         "eighteen nautical miles.", "How far can the Marlow Point lamp be seen?",
         "eighteen nautical miles", "Who rowed the fastest Marlow Point swim in 2003?"),
        ("Tessan Audio's R7 turntable ships with a carbon tonearm and a felt mat, and costs "
         "640 euros.", "How much does the Tessan Audio R7 turntable cost?", "640 euros",
         "How many watts does the Tessan Audio R9 amplifier deliver?"),
        ("The Oakhollow choir rehearses in the old school hall on Wednesday evenings under "
         "the conductor Priya Hale.", "Who conducts the Oakhollow choir?", "Priya Hale",
         "Who won the Oakhollow chess open last year?"),
        ("Brennwick orchard grows eleven varieties of cider apple and presses its fruit every "
         "October.", "How many apple varieties does Brennwick orchard grow?", "eleven",
         "What does a ticket to the Brennwick jazz weekend cost?"),
        ("The Kettering Street bakery opens at 6 am and sells rye loaves baked by Tomas "
         "Lindgren.", "Who bakes the rye loaves at the Kettering Street bakery?",
         "Tomas Lindgren", "When does the Kettering Street cinema close?"),
    ),
    "zh": (
        ("落霞湾码头每天早上七点发第一班船，船票二十五元。", "落霞湾码头的船票多少钱？", "二十五元",
         "落霞湾帆船赛的冠军是谁？"),
        ("松林镇图书馆藏书四万册，周一闭馆。", "松林镇图书馆有多少藏书？", "四万册",
         "松林镇马拉松哪一年开始举办？"),
        ("云帆科技的 T3 投影仪亮度为三千流明，售价两千九百元。", "云帆科技 T3 投影仪的亮度是多少？",
         "三千流明", "云帆科技 T5 音箱的续航有多久？"),
        ("白石村的茶园由周明远经营，每年四月采摘明前茶。", "白石村的茶园由谁经营？", "周明远",
         "白石村的龙舟队队长叫什么？"),
        ("东渡桥全长一百二十米，一九八五年建成。", "东渡桥有多长？", "一百二十米",
         "东渡隧道是谁设计的？"),
        ("青柳街的面馆每天营业到晚上十点，招牌是牛肉面。", "青柳街的面馆营业到几点？", "晚上十点",
         "青柳街的电影院几点关门？"),
    ),
}
