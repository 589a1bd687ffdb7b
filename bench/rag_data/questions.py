"""Question phrasings: how a user asks for each relation, written apart from the passages.

The wording here is a user's, not the passage's: "How tall is ...?" where the passage says
"rises 120 metres", "Who runs ...?" where it says "serves as its director". Some phrasings
are imperative ("Name the ...", "Tell me ..."), as users type them.
"""

from __future__ import annotations

import random

from rag_data.text import capitalise

# family -> relation -> lang -> phrasings ({name})
QUESTIONS: dict[str, dict[str, dict[str, tuple[str, ...]]]] = {
    "scientist_bio": {
        "birth_date": {"en": ("When was {name} born?", "What is {name}'s date of birth?"),
                       "zh": ("{name}是哪天出生的？", "{name}的生日是哪一天？")},
        "birth_city": {"en": ("In which city was {name} born?", "Where is {name} from by birth?"),
                       "zh": ("{name}出生在哪座城市？", "{name}的出生地是哪里？")},
        "university": {"en": ("Which university did {name} graduate from?",
                              "Where did {name} go to university?"),
                       "zh": ("{name}是哪所大学毕业的？", "{name}在哪里上的大学？")},
        "subject": {"en": ("What did {name} study?", "Which subject is {name}'s degree in?"),
                    "zh": ("{name}学的是什么专业？", "{name}大学读的什么？")},
        "employer": {"en": ("Who does {name} work for?", "Which organisation employs {name}?"),
                     "zh": ("{name}在哪个单位上班？", "哪家机构雇用了{name}？")},
    },
    "company": {
        "founded": {"en": ("When was {name} established?", "In what year did {name} start?"),
                    "zh": ("{name}是哪一年创立的？", "{name}哪年成立？")},
        "headquarters": {"en": ("Where is {name} based?", "In which city does {name} have its "
                                "head office?"),
                         "zh": ("{name}的总部在哪个城市？", "{name}总部设在哪里？")},
        "ceo": {"en": ("Who runs {name}?", "Who is the chief executive of {name}?"),
                "zh": ("{name}的总裁是谁？", "谁在掌管{name}？")},
        "staff": {"en": ("How many people work at {name}?", "How many employees does {name} "
                         "have?"),
                  "zh": ("{name}有多少员工？", "{name}一共有多少名员工？")},
        "product": {"en": ("What does {name} make?", "What is {name} known for producing?"),
                    "zh": ("{name}生产什么？", "{name}的主打产品是什么？")},
    },
    "gadget": {
        "maker": {"en": ("Who makes the {name}?", "Which company produces the {name}?"),
                  "zh": ("{name}是哪家公司的产品？", "{name}的生产商是谁？")},
        "weight": {"en": ("How heavy is the {name}?", "What does the {name} weigh?"),
                   "zh": ("{name}有多重？", "{name}的重量是多少？")},
        "battery_life": {"en": ("How long does the {name}'s battery last?",
                                "How many hours can the {name} run on one charge?"),
                         "zh": ("{name}的电池能用多久？", "{name}充一次电能用几个小时？")},
        "price": {"en": ("How much does the {name} cost?", "What is the price of the {name}?"),
                  "zh": ("{name}卖多少钱？", "{name}的价格是多少？")},
        "release_year": {"en": ("When did the {name} come out?", "What year was the {name} "
                                "released?"),
                         "zh": ("{name}是哪年上市的？", "{name}哪一年发布？")},
    },
    "town": {
        "population": {"en": ("How many people live in {name}?", "What is the population of "
                              "{name}?"),
                       "zh": ("{name}有多少人口？", "{name}住着多少人？")},
        "river": {"en": ("Which river flows through {name}?", "On what river is {name}?"),
                  "zh": ("{name}在哪条河边？", "流经{name}的是哪条河？")},
        "mayor": {"en": ("Who is the mayor of {name}?", "Who leads the council in {name}?"),
                  "zh": ("{name}的镇长是谁？", "谁是{name}的镇长？")},
        "twin_town": {"en": ("Which town is {name} twinned with?", "What is the twin town "
                             "of {name}?"),
                      "zh": ("{name}的友好城市是哪里？", "{name}和哪座城市结为友好城市？")},
        "market_day": {"en": ("On which day is the market in {name}?", "When is market day in "
                              "{name}?"),
                       "zh": ("{name}哪天赶集？", "{name}的集市在星期几？")},
    },
    "permit": {
        "office": {"en": ("Where do I apply for the {name}?", "Which office issues the {name}?"),
                   "zh": ("{name}去哪里办？", "哪个部门受理{name}？")},
        "fee": {"en": ("How much is the {name}?", "What does the {name} cost to get?"),
                "zh": ("办{name}要交多少钱？", "{name}的费用是多少？")},
        "processing_days": {"en": ("How long does the {name} take?", "How long is the wait for "
                                   "a {name}?"),
                            "zh": ("{name}多久能办下来？", "{name}需要等多长时间？")},
        "form_code": {"en": ("Which form do I need for the {name}?", "What is the form number "
                             "for the {name}?"),
                      "zh": ("申请{name}要填哪张表？", "{name}用的是哪个表格？")},
        "document": {"en": ("What else must I bring for the {name}?", "Which document goes "
                            "with a {name} application?"),
                     "zh": ("办{name}还要带什么材料？", "申请{name}需要附上什么？")},
    },
    "appliance_manual": {
        "reset_seconds": {"en": ("How do I factory-reset the {name}?",
                                 "How long must I hold power to reset the {name}?"),
                          "zh": ("{name}怎么恢复出厂设置？", "{name}复位要按住电源多久？")},
        "filter_interval": {"en": ("How often should the {name}'s filter be changed?",
                                   "When do I replace the filter of the {name}?"),
                            "zh": ("{name}的滤网多久换一次？", "{name}什么时候该换滤网？")},
        "tank_capacity": {"en": ("How much water does the {name}'s tank hold?",
                                 "What is the tank size of the {name}?"),
                          "zh": ("{name}的水箱能装多少水？", "{name}水箱多大？")},
        "setup_network": {"en": ("Which Wi-Fi network do I join to set up the {name}?",
                                 "What is the {name}'s pairing network called?"),
                          "zh": ("设置{name}要连哪个Wi-Fi？", "{name}的配网热点叫什么？")},
        "noise_level": {"en": ("How loud is the {name}?", "What noise level does the {name} "
                               "make?"),
                        "zh": ("{name}有多吵？", "{name}的噪音是多少分贝？")},
    },
    "ship": {
        "shipyard": {"en": ("Which yard built {name}?", "Where was {name} constructed?"),
                     "zh": ("{name}是哪家船厂造的？", "{name}在哪里建造？")},
        "launched": {"en": ("When was {name} launched?", "In what year did {name} first take "
                            "to the water?"),
                     "zh": ("{name}是哪年下水的？", "{name}哪一年下水？")},
        "home_port": {"en": ("What is the home port of {name}?", "Where is {name} registered?"),
                      "zh": ("{name}的母港在哪里？", "{name}登记在哪个港口？")},
        "captain": {"en": ("Who captains {name}?", "Who is in command of {name}?"),
                    "zh": ("{name}的船长是谁？", "谁指挥{name}？")},
        "tonnage": {"en": ("How big is {name}?", "What is the tonnage of {name}?"),
                    "zh": ("{name}有多少吨？", "{name}的吨位是多少？")},
    },
    "household": {
        "dog_name": {"en": ("What is the name of {name}'s dog?", "What is {name}'s dog called?"),
                     "zh": ("{name}的狗叫什么名字？", "{name}家的狗叫什么？")},
        "car_make": {"en": ("Which brand is {name}'s car?", "What car does {name} have?"),
                     "zh": ("{name}开的是什么牌子的车？", "{name}的车是什么品牌？")},
        "hobby": {"en": ("What does {name} do for fun?", "Name {name}'s favourite pastime."),
                  "zh": ("{name}业余时间喜欢做什么？", "{name}有什么爱好？")},
        "second_language": {"en": ("Which other language is {name} fluent in?",
                                   "{name} can hold a conversation in which language?"),
                            "zh": ("{name}会说哪门外语？", "{name}还能用哪种语言交流？")},
        "hometown": {"en": ("Where was {name} raised?", "In which city did {name} spend "
                            "childhood?"),
                     "zh": ("{name}是哪里人？", "{name}的家乡在哪里？")},
    },
    "research_lab": {
        "founder": {"en": ("Who first set up the {name}?", "Who started the {name}?"),
                    "zh": ("{name}是谁创办的？", "{name}最初是谁建起来的？")},
        "director": {"en": ("Who is in charge of the {name} today?", "Who heads the {name}?"),
                     "zh": ("{name}现在由谁负责？", "{name}的主任是谁？")},
        "funder": {"en": ("Who pays for the {name}?", "Where does the {name}'s money come "
                          "from?"),
                   "zh": ("{name}的经费由谁提供？", "谁资助{name}？")},
        "lab_city": {"en": ("In which city is the {name}?", "Where is the {name} located?"),
                     "zh": ("{name}在哪座城市办公？", "{name}设在哪座城市？")},
        "focus": {"en": ("What does the {name} research?", "What is the {name}'s field of "
                         "study?"),
                  "zh": ("{name}研究什么？", "{name}的研究领域是什么？")},
    },
    "software_library": {
        "latest_version": {"en": ("What is the newest version of {name}?",
                                  "Which release of {name} is current?"),
                           "zh": ("{name}最新是哪个版本？", "{name}现在的版本号是多少？")},
        "licence": {"en": ("Under which license is {name} distributed?", "What license does "
                           "{name} use?"),
                    "zh": ("{name}用的是什么开源协议？", "{name}以什么许可证发布？")},
        "written_in": {"en": ("What programming language is {name} written in?",
                              "Which language is {name} implemented in?"),
                       "zh": ("{name}是用什么语言写的？", "{name}的实现语言是什么？")},
        "maintainer": {"en": ("Who maintains {name}?", "Who looks after {name}'s releases?"),
                       "zh": ("{name}由谁维护？", "谁负责{name}的发布？")},
        "first_release": {"en": ("When was {name} first released?", "In what year did {name} "
                                 "appear?"),
                          "zh": ("{name}最早是哪年发布的？", "{name}哪一年首次推出？")},
    },
    "landmark": {
        "architect": {"en": ("Who designed the {name}?", "Which architect is behind the "
                             "{name}?"),
                      "zh": ("{name}是谁设计的？", "{name}的建筑师是谁？")},
        "height": {"en": ("How tall is the {name}?", "What is the height of the {name}?"),
                   "zh": ("{name}有多高？", "{name}的高度是多少？")},
        "completed": {"en": ("When did work on the {name} end?", "In which year was the {name} "
                             "built?"),
                      "zh": ("{name}是哪一年建成的？", "{name}哪年完工？")},
        "material": {"en": ("What is the {name} made of?", "Which material covers the "
                            "{name}?"),
                     "zh": ("{name}是用什么材料建的？", "{name}的外墙是什么材料？")},
        "district": {"en": ("In which part of town is the {name}?", "Where does the {name} "
                            "stand?"),
                     "zh": ("{name}在哪个区？", "{name}在城里哪一带？")},
    },
    "recipe": {
        "oven_temp": {"en": ("What temperature should the oven be for the {name}?",
                             "How hot do I bake the {name}?"),
                      "zh": ("做{name}烤箱要调到多少度？", "{name}用多少度烤？")},
        "bake_time": {"en": ("How long does the {name} go in the oven?",
                             "For how many minutes is the {name} baked?"),
                      "zh": ("{name}要烤多久？", "{name}烤几分钟？")},
        "main_ingredient": {"en": ("What is the main ingredient of the {name}?",
                                   "The {name} is mostly made with what?"),
                            "zh": ("{name}的主要食材是什么？", "{name}主要用什么做？")},
        "servings": {"en": ("How many people does the {name} feed?", "How many servings does "
                            "the {name} make?"),
                     "zh": ("{name}够几个人吃？", "{name}是几人份？")},
        "rest_time": {"en": ("How long should the {name} rest after baking?",
                             "After the oven, how long do I leave the {name}?"),
                      "zh": ("{name}出炉后要放多久？", "{name}烤好后静置多长时间？")},
    },
    "cli_manual": {
        "list_ports_cmd": {"en": ("Which command lists open ports in {name}?",
                                  "How do I see the open ports with {name}?"),
                           "zh": ("{name}用哪个命令查看开放端口？",
                                  "怎样用{name}列出开放的端口？")},
        "config_path": {"en": ("Where is {name}'s configuration file?",
                               "Which file holds the settings of {name}?"),
                        "zh": ("{name}的配置文件在哪里？", "{name}的设置保存在哪个文件？")},
        "default_port": {"en": ("What port does {name} use by default?",
                                "Which port number does {name} listen on?"),
                         "zh": ("{name}默认用哪个端口？", "{name}监听的端口号是多少？")},
        "verbose_flag": {"en": ("Which option makes {name} print more detail?",
                                "How do I turn on verbose output in {name}?"),
                         "zh": ("{name}用什么参数输出更多信息？", "怎么让{name}显示详细输出？")},
        "log_dir": {"en": ("Where does {name} write its logs?", "In which directory are "
                           "{name}'s logs?"),
                    "zh": ("{name}的日志在哪个目录？", "{name}把日志写到哪里？")},
    },
    "sports_club": {
        "coach": {"en": ("Who coaches {name}?", "Who is the manager of {name}?"),
                  "zh": ("{name}的教练是谁？", "谁在执教{name}？")},
        "stadium": {"en": ("Where do {name} play their home games?", "What is the home ground "
                           "of {name}?"),
                    "zh": ("{name}的主场在哪里？", "{name}在哪座球场打主场比赛？")},
        "club_founded": {"en": ("When were {name} formed?", "Since what year have {name} existed?"),
                         "zh": ("{name}是哪年成立的？", "{name}建队于哪一年？")},
        "league": {"en": ("Which league do {name} play in?", "What competition are {name} "
                          "part of?"),
                   "zh": ("{name}参加什么联赛？", "{name}在哪个联赛比赛？")},
        "kit_colours": {"en": ("What colours do {name} wear?", "What are {name}'s kit "
                               "colours?"),
                        "zh": ("{name}的队服是什么颜色？", "{name}穿什么颜色的球衣？")},
    },
}


def ask(family: str, relation: str, lang: str, name: str, rng: random.Random) -> str:
    """One question about ``relation`` of the entity ``name``, in one of the phrasings."""
    try:
        phrasings = QUESTIONS[family][relation][lang]
    except KeyError:
        raise ValueError(f"no {lang} question for {family}.{relation}") from None
    return capitalise(rng.choice(phrasings).format(name=name), name)

